"""The engine's regex-free pre-tokenizer (`re` plus generated Unicode ranges) against the `regex` module.

- The committed range table is what scripts/generate_unicode_classes.py makes from `regex` today.
- Every class, and every negated class the patterns use, matches exactly the code points `regex`'s does,
  over all of Unicode, in both compiled variants.
- Every pre-tokenizer pattern cuts a large varied corpus (random text across scripts, digits, white
  space runs, contractions, emoji, unassigned code points) exactly as `regex` does.
- Whole tokenizers give the same ids as with `regex` on the project's tokenizer corpus (our tests' texts,
  llama.cpp's suite, the random texts), for every pre-tokenizer (SmolLM2's vocabulary re-labelled).
"""
from __future__ import annotations

import importlib.util
import random
import sys
import unicodedata

import pytest
import regex

from pychat_wasm.tokenizers import wpm as tokenizer_wpm
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers.pretokenizers import PRE_TOKENIZERS, split_pre_tokens
from pychat_wasm.tokenizers.bpe import BPETokenizer
from pychat_wasm.tokenizers.unicode_classes import RANGES, UNICODEDATA_VERSION
from pychat_wasm.tokenizers.unicode_regex import UnicodeRegex, compile_unicode_regex, translate

from conftest import REPO
from llama_cpp_vocabs import MissingSuite, read_cases, suite_vocabs
from test_train_bpe import PROBES
from test_tokenizer import CORPUS

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
    """The texts of llama.cpp's tokenizer suite (test_llama_cpp_tokenizer_suite.py fails if it is missing)."""
    try:
        return sorted({text for name in suite_vocabs() for text in read_cases(name)})
    except MissingSuite:
        return []


VARIED_CORPUS = CORPUS + PROBES + llama_cpp_suite_texts() + random_texts(0, 3000)
ENCODABLE_CORPUS = [regex.sub("[\ud800-\udfff]", "\ufffd", t) for t in VARIED_CORPUS]  # no lone surrogates


def test_range_table_is_what_the_generator_makes_from_regex():
    if unicodedata.unidata_version != UNICODEDATA_VERSION:
        pytest.skip("the WordPiece maps come from unicodedata %s; this Python has %s"
                    % (UNICODEDATA_VERSION, unicodedata.unidata_version))
    spec = importlib.util.spec_from_file_location("generate_unicode_classes",
                                                  REPO / "scripts" / "generate_unicode_classes.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (REPO / "pychat_wasm" / "tokenizers" / "unicode_classes.py").read_text(encoding="utf-8")
    assert generator.generate() == committed, "run scripts/generate_unicode_classes.py (regex %s)" % regex.__version__


@pytest.mark.parametrize("cls", [r"\p{L}", r"\p{N}", r"\p{P}", r"\p{M}", r"\p{S}", r"\s", r"\S", r"\p{Cc}", r"\p{Cf}",
                                 r"\p{Co}", r"\p{Cs}",
                                 r"[^\s\p{L}\p{N}]", r"[^\r\n\p{L}\p{N}]", r"[\p{P}\$\+<=>\^~\|]", r"[\p{L}\p{M}]",
                                 r"[^\s\p{L}\p{M}\p{N}]"])
def test_class_matches_the_code_points_regex_matches(cls):
    ours, reference = compile_unicode_regex("(?:%s)+" % cls), RegexSpans("(?:%s)+" % cls)
    for text in (EVERY_CODE_POINT, NO_SURROGATES, BMP_NO_SURROGATES):  # all ranges; stand-ins; text as it is
        assert list(ours.spans(text)) == list(reference.spans(text))


def test_case_insensitive_contractions_match_what_regex_matches():
    """`(?i:'s|'t|'re|...)`: each letter of the contractions against every code point ('ſ' is an s)."""
    for letter in "strevmld":
        text = "\x00'".join(EVERY_CODE_POINT)
        pattern = "(?i:'%s)" % letter
        assert list(compile_unicode_regex(pattern).spans(text)) == list(RegexSpans(pattern).spans(text)), letter


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_finds_what_regex_finds(pattern):
    ours, reference = compile_unicode_regex(pattern), RegexSpans(pattern)
    for text in VARIED_CORPUS:
        assert list(ours.spans(text)) == list(reference.spans(text)), repr(text)


@pytest.mark.parametrize("name", sorted({n for n, pre in PRE_TOKENIZERS.items() if len(pre.splits) > 1}))
def test_chained_splits_match_regex(name):
    splits = PRE_TOKENIZERS[name].splits
    ours = [compile_unicode_regex(p) for p in splits]
    reference = [RegexSpans(p) for p in splits]
    text = "".join(VARIED_CORPUS)
    assert split_pre_tokens(text, ours) == split_pre_tokens(text, reference)


@pytest.mark.parametrize("pattern, message", [(r"\d+", r"\\d"), (r"\w", r"\\w"), (r"\bx", r"\\b"),
                                              (r"[^\S]", r"\\S"), (r"\p{Han}", "Han"), (r"[a[b]]", "nested")])
def test_patterns_re_would_read_differently_are_refused(pattern, message):
    with pytest.raises(ValueError, match=message):
        translate(pattern)


def test_compiled_once_per_pattern():
    assert compile_unicode_regex(PATTERNS[0]) is compile_unicode_regex(PATTERNS[0])
    assert isinstance(compile_unicode_regex(PATTERNS[0]), UnicodeRegex)
    assert len(RANGES["L"]) > 500 and RANGES["s"][0] == (0x09, 0x0D)


@pytest.fixture(scope="module")
def smollm2_metadata(smollm2_path):
    return GGUFFile.open(str(smollm2_path)).metadata


@pytest.mark.parametrize("pre", sorted({pre.splits: name for name, pre in PRE_TOKENIZERS.items()}.values()))
def test_ids_equal_the_ids_with_regex(smollm2_metadata, pre):
    ours = BPETokenizer(dict(smollm2_metadata, **{"tokenizer.ggml.pre": pre}))
    with_regex = BPETokenizer(dict(smollm2_metadata, **{"tokenizer.ggml.pre": pre}))
    with_regex.patterns = [RegexSpans(p) for p in with_regex.pre_tokenizer.splits]
    for text in ENCODABLE_CORPUS:
        assert ours.encode(text, add_special=False) == with_regex.encode(text, add_special=False), repr(text)
