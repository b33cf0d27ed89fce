"""Texts for the regex-free pre-tokenizer's tests, and `regex` as their reference splitter.

Every code point (with and without surrogates), every pattern the pre-tokenizers use, and a large varied corpus:
the shared texts, llama.cpp's suite, and seeded random text across scripts, digits, white space runs,
contractions, emoji and unassigned code points. Used natively (tests/oracle/test_unicode_regex.py) and in
Pyodide (tests/browser/test_in_pyodide.py).
"""
from __future__ import annotations

import random
import sys

import regex

from pychat_wasm.tokenizers import wpm as tokenizer_wpm
from pychat_wasm.tokenizers.pretokenizers import PRE_TOKENIZERS

from llama_cpp_vocabs import MissingSuite, read_cases, suite_vocabs
from texts import BPE_PROBES, TOKENIZER_CORPUS

EVERY_CODE_POINT = "".join(map(chr, range(sys.maxunicode + 1)))
NO_SURROGATES = EVERY_CODE_POINT[:0xD800] + EVERY_CODE_POINT[0xE000:]  # matched with the stand-ins
BMP_NO_SURROGATES = NO_SURROGATES[:0x10000 - 0x800]  # matched as it is
PATTERNS = sorted({p for pre in PRE_TOKENIZERS.values() for p in pre.splits}
                  | {tokenizer_wpm.WORD.pattern, tokenizer_wpm.DROPPED.pattern, tokenizer_wpm.DROPPED_WITH_MARKS.pattern})

# Characters worth many draws: every kind of white space (and U+001C..U+001F, white space to `re` only),
# ASCII digits and other numbers, the letters of the contractions, apostrophes, punctuation and symbols.
FOCUS = (" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
         "\u200b\u200d\ufeff" "0123456789٠١٢٣۴०१๓௫Ⅻⅻ①½²³０９𝟘𝟙" "sStTrReEvVmMlLdDſ'’`\"" ".,!?;:-_$+<=>^~|@#%&*()[]{}\\/")
SCRIPT_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
                 (0x900, 0x97F), (0xE00, 0xE7F), (0x1780, 0x17FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF),
                 (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x10400, 0x104FF),
                 (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0xE01EF)]
CONTRACTIONS = ["'s", "'S", "'t", "'re", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D",
                "'ſ", "’s", "''s", "'x"]


class RegexSpans:
    """A `regex` pattern with the `spans` of our `UnicodeRegex`, to run our splitter with the reference."""

    def __init__(self, pattern: str):
        self.compiled = regex.compile(pattern)

    def spans(self, text: str):
        return (m.span() for m in self.compiled.finditer(text))


def random_texts(seed: int, n: int):
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 30)):
            kind = rng.random()
            if kind < 0.35:
                parts.append("".join(rng.choice(FOCUS) for _ in range(rng.randint(1, 6))))
            elif kind < 0.7:
                lo, hi = rng.choice(SCRIPT_RANGES)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
            elif kind < 0.8:
                parts.append(rng.choice(CONTRACTIONS))
            elif kind < 0.9:
                parts.append(rng.choice(" \t\n\r") * rng.randint(1, 5))
            else:  # anywhere in Unicode: unassigned, private use, surrogates
                parts.append(chr(rng.randint(0, sys.maxunicode)))
        texts.append("".join(parts))
    return texts


def llama_cpp_suite_texts():
    """The texts of llama.cpp's tokenizer suite (tests/oracle/test_llama_cpp_tokenizer_suite.py fails if it is missing)."""
    try:
        return sorted({text for name in suite_vocabs() for text in read_cases(name)})
    except MissingSuite:
        return []


VARIED_CORPUS = TOKENIZER_CORPUS + BPE_PROBES + llama_cpp_suite_texts() + random_texts(0, 3000)
ENCODABLE_CORPUS = [regex.sub("[\ud800-\udfff]", "\ufffd", t) for t in VARIED_CORPUS]  # no lone surrogates
