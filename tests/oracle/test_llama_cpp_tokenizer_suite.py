"""llama.cpp's own tokenizer test suite (tests/test-tokenizer-0.cpp over models/ggml-vocab-*.gguf).

Every vocabulary with cases in the suite, loaded from its GGUF file by `load_tokenizer`, must give
exactly the ids in its `.out` file for every text in its `.inp` file, tokenized as the suite does:
add_special and parse_special off. The files come out of node-llama-cpp's copy of the llama.cpp sources
(see llama_cpp_vocabs.py).
"""
from __future__ import annotations

import pytest

from pychat_wasm.tokenizers import load_tokenizer

from llama_cpp_vocabs import KIND_OF, MissingSuite, read_cases, suite_vocabs, vocab_path


@pytest.fixture(scope="module")
def vocabs():
    try:
        return suite_vocabs()
    except MissingSuite as missing:
        pytest.fail(str(missing))


def test_suite_holds_the_vocabularies_we_know(vocabs):
    assert vocabs == sorted(KIND_OF)


@pytest.mark.parametrize("name", sorted(KIND_OF))
def test_ids_match_llama_cpp(vocabs, name):
    tokenizer = load_tokenizer(vocab_path(name))
    assert tokenizer.kind == KIND_OF[name]
    cases = read_cases(name)
    assert len(cases) >= 40
    failed = [(text, ids, tokenizer.encode(text, add_special=False, parse_special=False))
              for text, ids in cases.items()
              if tokenizer.encode(text, add_special=False, parse_special=False) != ids]
    assert not failed, "%d of %d cases differ, first: %r" % (len(failed), len(cases), failed[0])

