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
import unicodedata
from pathlib import Path

import pytest
import regex

from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers.pretokenizers import PRE_TOKENIZERS, split_pre_tokens
from pychat_wasm.tokenizers.bpe import BPETokenizer
from pychat_wasm.tokenizers.unicode_classes import RANGES, UNICODEDATA_VERSION
from pychat_wasm.tokenizers.unicode_regex import UnicodeRegex, compile_unicode_regex, translate

from unicode_texts import (BMP_NO_SURROGATES, ENCODABLE_CORPUS, EVERY_CODE_POINT, NO_SURROGATES, PATTERNS, VARIED_CORPUS,
                           RegexSpans)

REPO = Path(__file__).resolve().parents[2]


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
