"""Pre-tokenizer regexes with Unicode classes (`\\p{L}`, `\\s`, ...) compiled by the standard `re` module.

Tokenizer patterns are written for the `regex` module (as in HF tokenizers and llama.cpp): `\\p{L}+`,
`[^\\s\\p{L}\\p{N}]`. `re` has no `\\p{...}`, and its `\\s` also takes U+001C..U+001F, which `regex` does
not. So each class is spelled out as the code point ranges in `unicode_classes` (generated once from
`regex`, the same on every Python whatever its `unicodedata`):

    \\p{X} outside brackets -> [ranges of X]        \\s -> [white space]     \\S -> [^white space]
    \\p{X} inside brackets  -> ranges of X           (also in negated classes: [^\\s\\p{L}] stays exact)

Escapes whose meaning differs between the two modules (\\d \\w \\b and the rest) are refused rather than
guessed. Everything else, `(?i:...)` and look-aheads included, means the same to `re`.

Speed: `re` checks a class's code points beyond U+FFFF one range at a time (those below in one table
look-up), which made `\\p{N}` five to twenty times slower. So each pattern is also compiled with only the
ranges up to U+FFFF, plus one stand-in per class for all its characters beyond: a surrogate code point,
which real text never holds (U+D800 stands for every letter beyond U+FFFF, U+D801 for every number, ...).
Text without characters beyond U+FFFF (nearly all text) is matched as it is; other text is matched after
each such character is replaced by its class's stand-in, one character for one, so the match spans are
those of the text. Patterns that name characters beyond U+FFFF or surrogates, and text that holds
surrogates, take the variant with every range.

    >>> compile_unicode_regex(r" ?\\p{L}+|\\p{N}").findall("héllo 42 𝔘𝔫")
    ['héllo', '4', '2', ' 𝔘𝔫']
"""
from __future__ import annotations

import re
from bisect import bisect_right
from typing import Dict, Iterator, List, Tuple

from .unicode_classes import RANGES

REFUSED_ESCAPES = "dDwWbBAZhHvVpPX"  # mean something else (or nothing) to `re`; \p and \P only as \p{X}


def class_body(ranges: Tuple[Tuple[int, int], ...]) -> str:
    """The inside of a character class that matches exactly `ranges`.

    >>> class_body(((0x41, 0x5A), (0xB5, 0xB5)))
    '\\\\x41-\\\\x5a\\\\xb5'
    """
    return "".join(_escape(a) if a == b else _escape(a) + "-" + _escape(b) for a, b in ranges)


def _escape(code_point: int) -> str:
    if code_point < 0x100:
        return "\\x%02x" % code_point
    if code_point < 0x10000:
        return "\\u%04x" % code_point
    return "\\U%08x" % code_point


BMP_LAST = 0xFFFF  # the last code point of the Basic Multilingual Plane
STAND_INS = {"L": 0xD800, "N": 0xD801, "P": 0xD802, "M": 0xD803, "S": 0xD804, "Cf": 0xD805, "Co": 0xD806}
NO_CLASS_STAND_IN = 0xD807  # for characters beyond U+FFFF in none of the classes (unassigned ones)


def _bmp_part(name: str) -> Tuple[Tuple[int, int], ...]:
    """The class's ranges up to U+FFFF without the stand-ins, plus its stand-in if it has characters beyond."""
    kept: List[Tuple[int, int]] = []
    for a, b in RANGES[name]:
        for lo, hi in ((a, min(b, BMP_LAST, 0xD7FF)), (max(a, 0xD808), min(b, BMP_LAST))):
            if lo <= hi:
                kept.append((lo, hi))
    if RANGES[name][-1][1] > BMP_LAST:
        kept.append((STAND_INS[name], STAND_INS[name]))
    return tuple(sorted(kept))


def _beyond_bmp() -> Tuple[List[int], List[Tuple[int, int]]]:
    """Starts of the ranges beyond U+FFFF, and for each (last code point, stand-in), for bisection."""
    table = sorted((max(a, BMP_LAST + 1), b, STAND_INS[name]) for name in STAND_INS
                   for a, b in RANGES[name] if b > BMP_LAST)
    return [a for a, _, _ in table], [(b, stand_in) for _, b, stand_in in table]


_BODIES: Dict[str, str] = {name: class_body(ranges) for name, ranges in RANGES.items()}
_BMP_BODIES: Dict[str, str] = {name: class_body(_bmp_part(name)) for name in RANGES}
_STARTS, _LASTS_AND_STAND_INS = _beyond_bmp()
_BEYOND_BMP = re.compile("[\U00010000-\U0010ffff]")
_BEYOND_BMP_OR_SURROGATE = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAMES_BEYOND_BMP = re.compile(r"[\ud800-\udfff\U00010000-\U0010ffff]|\\U|\\u[dD][89a-fA-F]")


def _stand_in(m) -> str:
    code_point = ord(m.group())
    i = bisect_right(_STARTS, code_point) - 1
    if i >= 0 and code_point <= _LASTS_AND_STAND_INS[i][0]:
        return chr(_LASTS_AND_STAND_INS[i][1])
    return chr(NO_CLASS_STAND_IN)


def with_stand_ins(text: str) -> str:
    """`text` with each character beyond U+FFFF replaced by its class's stand-in.

    >>> with_stand_ins("a😀𝔘") == "a" + chr(STAND_INS["S"]) + chr(STAND_INS["L"])
    True
    """
    return _BEYOND_BMP.sub(_stand_in, text)


def translate(pattern: str, bmp_only: bool = False) -> str:
    """A `regex` pattern spelled for `re`: its Unicode classes replaced by their ranges (`bmp_only`: those
    up to U+FFFF and the stand-ins, for text without characters beyond or with them replaced).

    >>> translate(r"[^\\s\\p{N}]") == "[^" + _BODIES["s"] + _BODIES["N"] + "]"
    True
    """
    bodies = _BMP_BODIES if bmp_only else _BODIES
    out: List[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i + 1:i + 2]
            if escaped == "p" and pattern[i + 2:i + 3] == "{":
                end = pattern.find("}", i)
                name = pattern[i + 3:end]
                if end < 0 or name not in _BODIES or name == "s":
                    raise ValueError("unsupported Unicode class %r in %r (known: %s)"
                                     % (pattern[i:end + 1], pattern, ", ".join(n for n in RANGES if n != "s")))
                out.append(bodies[name] if in_class else "[%s]" % bodies[name])
                i = end + 1
                continue
            if escaped == "s":
                out.append(bodies["s"] if in_class else "[%s]" % bodies["s"])
            elif escaped == "S" and not in_class:
                out.append("[^%s]" % bodies["s"])
            elif escaped == "S" or (escaped and escaped in REFUSED_ESCAPES):
                raise ValueError("escape \\%s in %r means different things to `regex` and `re`" % (escaped, pattern))
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            if pattern[i + 1:i + 2] == "^":  # a "]" right after "[" or "[^" would be a literal: not used here
                out.append("^")
                i += 1
        elif c == "[":
            raise ValueError("nested character class in %r: `re` reads it differently" % pattern)
        elif c == "]" and in_class:
            in_class = False
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


class UnicodeRegex:
    """A `regex`-syntax pattern matched by `re`; `spans(text)` gives where it matches."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.full = re.compile(translate(pattern))
        self.bmp = re.compile(translate(pattern, bmp_only=True))
        self.names_beyond_bmp = _NAMES_BEYOND_BMP.search(pattern) is not None

    def spans(self, text: str) -> Iterator[Tuple[int, int]]:
        """(start, end) of each match, left to right, as `regex.finditer` finds them."""
        compiled = self.bmp
        if not text.isascii() and _BEYOND_BMP_OR_SURROGATE.search(text):
            if self.names_beyond_bmp or _SURROGATE.search(text):
                compiled = self.full
            else:
                text = with_stand_ins(text)
        return (m.span() for m in compiled.finditer(text))

    def findall(self, text: str) -> List[str]:
        return [text[start:end] for start, end in self.spans(text)]

    def sub(self, replacement: str, text: str) -> str:
        pieces: List[str] = []
        done = 0
        for start, end in self.spans(text):
            pieces += [text[done:start], replacement]
            done = end
        return "".join(pieces) + text[done:]


_COMPILED: Dict[str, UnicodeRegex] = {}


def compile_unicode_regex(pattern: str) -> UnicodeRegex:
    """The pattern compiled for `re`, once per pattern (the translations are long and compile slowly)."""
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        compiled = _COMPILED[pattern] = UnicodeRegex(pattern)
    return compiled
