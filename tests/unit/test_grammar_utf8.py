"""The grammar's UTF-8 reader (matcher.decode_utf8, which decides which byte tokens a grammar allows) accepts
exactly what Python's strict UTF-8 decoder accepts: a byte sequence reads as characters iff it is well-formed
UTF-8, and an unfinished character is kept iff some continuation completes it. Otherwise a grammar's string
could take bytes that the answer's text shows as replacement characters (and maxLength would count wrong)."""
from __future__ import annotations

import itertools

import pytest

from pychat_wasm.grammar.matcher import decode_utf8

CONTINUATIONS = range(0x80, 0xC0)


def python_reads(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def python_may_complete(raw: bytes) -> bool:
    """Whether some continuation bytes make `raw` well-formed: its next byte decides, any after it may be 80."""
    return any(python_reads(raw + bytes([c] + [0x80] * n)) for c in CONTINUATIONS for n in range(3))


@pytest.mark.parametrize("lead", range(0x80, 0x100))
def test_a_lead_byte_and_the_one_after_it_as_python_reads_them(lead):
    for second in [None, 0x00, 0x41, 0x7F, *CONTINUATIONS, 0xC2, 0xE0, 0xF0, 0xFF]:
        raw = bytes([lead] if second is None else [lead, second])
        points, partial = decode_utf8(raw, None)
        if python_reads(raw):
            assert points == [ord(c) for c in raw.decode("utf-8")] and partial is None
        elif points is None:
            assert not python_may_complete(raw) or raw[-1] < 0x80, raw
        else:
            assert partial is not None and python_may_complete(raw), raw


@pytest.mark.parametrize("lead", [0xE0, 0xE1, 0xED, 0xEE, 0xF0, 0xF1, 0xF4])
def test_whole_characters_split_anywhere_read_as_python_reads_them(lead):
    for second, third in itertools.product(CONTINUATIONS, CONTINUATIONS):
        raw = bytes([lead, second, third] + ([0x80] if lead >= 0xF0 else []))
        for cut in range(1, len(raw)):
            points, partial = decode_utf8(raw[:cut], None)
            if points is not None:
                points, partial = decode_utf8(raw[cut:], partial)
            accepted = points is not None and partial is None
            assert accepted == python_reads(raw), raw
            if accepted:
                assert points == [ord(raw.decode("utf-8"))]
