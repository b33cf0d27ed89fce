"""Tokenizers against independent references.

- Both real models (SmolLM2: byte-level BPE, pre "smollm"; Gemma 3: SentencePiece with byte fallback)
  against the tokenizer transformers builds from the same GGUF, over a varied corpus.
- The other pre-tokenizer names against HF `tokenizers` pre-tokenizers built from transformers' own
  regex table, and whole tokenizers (SmolLM2's vocabulary re-labelled with each name, written with
  gguf.GGUFWriter) against a `tokenizers.Tokenizer` built from the same vocabulary and merges.
- BOS/EOS flags against the metadata as transformers' GGUF reader reads it.
"""
from __future__ import annotations

import json
import subprocess
import time
import warnings

import pytest
import transformers
from transformers.integrations.gguf import gguf_tokenizer_mapping
from transformers.integrations.gguf import reader as gguf_reader

from pychat_wasm.errors import TokenizerError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers import load_tokenizer
from pychat_wasm.tokenizers.pretokenizers import PRE_TOKENIZERS, split_pre_tokens
from pychat_wasm.tokenizers.bpe import bpe_merge, bytes_to_unicode
from pychat_wasm.tokenizers.unicode_regex import compile_unicode_regex

from gguf_files import write_gguf
from texts import TOKENIZER_CORPUS

MODELS = ["smollm2", "gemma3"]


# -- fixtures: our tokenizers (fast) and transformers' (slow, once per session) ----------------------

@pytest.fixture(scope="session")
def model_paths(smollm2_path, gemma3_path):
    return {"smollm2": smollm2_path, "gemma3": gemma3_path}


@pytest.fixture(scope="session")
def ours(model_paths):
    return {name: load_tokenizer(GGUFFile.open(str(path))) for name, path in model_paths.items()}


@pytest.fixture(scope="session")
def hf(hf_smollm2_tokenizer, gemma3_path):
    gemma3 = transformers.AutoTokenizer.from_pretrained(str(gemma3_path.parent), gguf_file=gemma3_path.name)
    return {"smollm2": hf_smollm2_tokenizer, "gemma3": gemma3}


@pytest.fixture(scope="session")
def metadata(model_paths):
    """The scalar tokenizer metadata as transformers' own GGUF reader (not ours) sees it."""
    return {name: gguf_reader.read_gguf_metadata(str(path), ())[0] for name, path in model_paths.items()}


# -- the real models against transformers ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("text", TOKENIZER_CORPUS)
def test_ids_match_transformers(ours, hf, model, text):
    assert ours[model].encode(text, add_special=False) == hf[model].encode(text, add_special_tokens=False)


# Text with lone surrogates (a JS string cut inside an emoji, then sent to Python as JSON) cannot be UTF-8:
# the engine reads it as the page's own TextEncoder does, and the reference for that reading is Node's.
SURROGATE_TEXTS = ["broken \ud83d emoji", "tail \udc00", "pair \ud83d\ude00 whole", "\ud800\ud800x", "\udfff"]


def browser_reading(texts):
    script = ("const texts = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(texts.map((t) => new TextDecoder().decode(new TextEncoder().encode(t)))));")
    out = subprocess.run(["node", "-e", script], input=json.dumps(texts), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_lone_surrogates_are_read_as_a_browser_reads_them(ours, hf, model):
    read = browser_reading(SURROGATE_TEXTS)
    assert "\ufffd" in read[0] and "\U0001f600" in read[2]  # the reference did replace and pair
    for text, as_read in zip(SURROGATE_TEXTS, read):
        assert ours[model].encode(text, add_special=False) == hf[model].encode(as_read, add_special_tokens=False)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_long_text_matches_transformers(ours, hf, model):
    text = "\n".join(TOKENIZER_CORPUS) * 3
    assert ours[model].encode(text, add_special=False) == hf[model].encode(text, add_special_tokens=False)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_bos_eos_follow_metadata(ours, hf, metadata, model):
    meta, tok = metadata[model], ours[model]
    assert tok.bos_id == meta["tokenizer.ggml.bos_token_id"]
    assert tok.eos_id == meta["tokenizer.ggml.eos_token_id"]
    assert tok.add_bos == meta["tokenizer.ggml.add_bos_token"]
    assert tok.add_eos == bool(meta.get("tokenizer.ggml.add_eos_token", False))
    content = hf[model].encode("Hello there", add_special_tokens=False)
    expected = [tok.bos_id] * tok.add_bos + content + [tok.eos_id] * tok.add_eos
    assert tok.encode("Hello there") == expected
    assert tok.encode("Hello there", add_special=False) == content
    assert tok.encode("", add_special=False) == []


def test_known_bos_eos_and_end_of_turn(ours):
    smol, gemma = ours["smollm2"], ours["gemma3"]
    assert (smol.bos_id, smol.eos_id, smol.add_bos) == (1, 2, False)
    assert (gemma.bos_id, gemma.eos_id, gemma.add_bos) == (2, 1, True)
    assert {0, 2} <= smol.end_of_turn_ids  # <|endoftext|>, <|im_end|>
    assert {1, 106} <= gemma.end_of_turn_ids  # <eos>, <end_of_turn>
    assert 212 not in gemma.end_of_turn_ids  # "</s>": a user-defined HTML tag in Gemma, not an end of turn
    assert smol.encode("<|im_start|>") == [1] and smol.encode("<|im_start|>", parse_special=False) != [1]
    assert gemma.encode("<start_of_turn>", add_special=False) == [105]
    assert 105 not in gemma.encode("<start_of_turn>", add_special=False, parse_special=False)
    assert gemma.encode("\n\n", add_special=False, parse_special=False) == [108]  # user-defined: always whole


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_decode_round_trip_and_matches_transformers(ours, hf, model):
    tok = ours[model]
    for text in TOKENIZER_CORPUS:
        ids = tok.encode(text, add_special=False)
        assert tok.decode(ids) == text
        assert tok.decode(ids) == hf[model].decode(ids, clean_up_tokenization_spaces=False)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_token_text_matches_transformers(ours, hf, model):
    tok = ours[model]
    ids = list(range(0, tok.vocab_size, 997)) + [tok.bos_id, tok.eos_id]
    for i in ids:
        assert tok.token_text(i) == hf[model].convert_ids_to_tokens(i)
    assert tok.vocab_size == len(hf[model])


def test_skip_special_drops_control_tokens(ours):
    smol = ours["smollm2"]
    ids = smol.encode("<|im_start|>user\nHi<|im_end|>")
    assert smol.decode(ids, skip_special=True) == "user\nHi"


def test_stream_decoder_holds_partial_characters(ours):
    gemma = ours["gemma3"]
    text = "ok 𓀀𓁐 ꙮ done"
    ids = gemma.encode(text, add_special=False)
    byte_ids = [i for i in ids if gemma.token_text(i).startswith("<0x")]
    assert len(byte_ids) >= 8, "the test needs characters that only byte fallback can spell"
    decoder = gemma.stream_decoder()
    pieces = [decoder.feed(i) for i in ids]
    assert "\ufffd" not in "".join(pieces)
    assert pieces.count("") >= 6  # three of every four bytes of a 4-byte character are held back
    assert "".join(pieces) + decoder.flush() == text
    cut = gemma.stream_decoder()
    for i in ids[:ids.index(byte_ids[0]) + 2]:  # stop in the middle of a character
        cut.feed(i)
    assert cut.flush() == "\ufffd"


def test_token_bytes(ours):
    smol, gemma = ours["smollm2"], ours["gemma3"]
    assert smol.token_bytes(smol.encode(" world", add_special=False)[0]) == b" world"
    assert gemma.token_bytes(gemma.token_ids["<0xF0>"]) == b"\xf0"
    assert gemma.token_bytes(gemma.token_ids["▁world"]) == b" world"
    assert gemma.token_bytes(105) == b"<start_of_turn>"
    assert (smol.kind, smol.pre, gemma.kind) == ("bpe", "smollm", "spm")


@pytest.mark.slow
def test_add_space_prefix_after_each_special_token(ours, hf, gemma3_path):
    """llama.cpp's SPM rule: with add_space_prefix, text at the start or after a special token gets "▁"."""
    metadata = dict(GGUFFile.open(str(gemma3_path)).metadata, **{"tokenizer.ggml.add_space_prefix": True})
    prefixed = load_tokenizer(metadata)
    ref = hf["gemma3"]
    expected = (ref.encode(" Hi", add_special_tokens=False) + [105]
                + ref.encode(" there you", add_special_tokens=False))
    assert prefixed.encode("Hi<start_of_turn>there you", add_special=False) == expected
    assert prefixed.decode(prefixed.encode("Hi there", add_special=False)) == "Hi there"


def test_load_is_fast(gemma3_path):
    gguf_file = GGUFFile.open(str(gemma3_path))
    start = time.perf_counter()
    tok = load_tokenizer(gguf_file)
    tok.encode("warm up <start_of_turn> the special-token matcher")
    assert time.perf_counter() - start < 3.0


# -- pre-tokenizers by name, against HF tokenizers ------------------------------------------------

def _hf_split(patterns):
    from tokenizers import Regex, pre_tokenizers
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(p), behavior="isolated") for p in patterns])


@pytest.mark.parametrize("name", ["default", "gpt-2", "llama-bpe", "llama3", "qwen2", "qwen35", "smollm", "falcon",
                                  "deepseek-llm", "deepseek-coder", "gemma4"])
def test_pre_tokenizer_splits_match_hf_tokenizers(name):
    patterns = PRE_TOKENIZERS[name].splits
    hf_split = _hf_split(patterns)
    compiled = [compile_unicode_regex(p) for p in patterns]
    for text in TOKENIZER_CORPUS:
        assert split_pre_tokens(text, compiled) == [w for w, _ in hf_split.pre_tokenize_str(text)], text


def test_gpt2_split_matches_byte_level_pre_tokenizer():
    from tokenizers import pre_tokenizers
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    spell = bytes_to_unicode()
    compiled = [compile_unicode_regex(p) for p in PRE_TOKENIZERS["gpt-2"].splits]
    for text in TOKENIZER_CORPUS:
        ours = ["".join(spell[b] for b in w.encode()) for w in split_pre_tokens(text, compiled)]
        assert ours == [w for w, _ in byte_level.pre_tokenize_str(text)], text


@pytest.mark.parametrize("name", ["llama3", "llama-bpe", "qwen2"])
def test_regexes_are_the_ones_transformers_uses(name):
    hf_split = _hf_split([gguf_tokenizer_mapping.GGUF_PRE_TOKENIZER_SPLITS[name]])
    compiled = [compile_unicode_regex(p) for p in PRE_TOKENIZERS[name].splits]
    for text in TOKENIZER_CORPUS:
        assert split_pre_tokens(text, compiled) == [w for w, _ in hf_split.pre_tokenize_str(text)], text


# -- whole BPE tokenizers per pre-tokenizer name: a GGUF written with gguf-py vs a tokenizers.Tokenizer

@pytest.fixture(scope="session")
def smollm2_vocab(smollm2_path):
    meta = GGUFFile.open(str(smollm2_path)).metadata
    return meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"], meta["tokenizer.ggml.merges"]


def _write_bpe_gguf(path, vocab, pre):
    tokens, types, merges = vocab
    return write_gguf(path, "llama", {"tokenizer_model": "gpt2", **({"tokenizer_pre": pre} if pre is not None else {}),
                                      "token_list": tokens, "token_types": types, "token_merges": merges,
                                      "bos_token_id": 1, "eos_token_id": 2})


def _hf_bpe_tokenizer(vocab, pre):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    tokens, types, merges = vocab
    spec = PRE_TOKENIZERS[pre]
    model = models.BPE({t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ")) for m in merges],
                       ignore_merges=spec.ignore_merges)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([_hf_split(spec.splits),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
    return tok


@pytest.mark.parametrize("pre", ["default", "gpt-2", "llama-bpe", "qwen2", "qwen35", "smollm", "falcon", "deepseek-llm",
                                 "deepseek-coder"])
def test_bpe_per_pre_tokenizer_matches_hf_tokenizers(tmp_path, smollm2_vocab, pre):
    ours = load_tokenizer(_write_bpe_gguf(tmp_path / "tiny.gguf", smollm2_vocab, pre))
    ref = _hf_bpe_tokenizer(smollm2_vocab, pre)
    assert ours.pre == pre
    assert ours.add_bos == PRE_TOKENIZERS[pre].add_bos  # no add_bos_token key: llama.cpp's default per name
    for text in TOKENIZER_CORPUS:
        assert ours.encode(text, add_special=False) == ref.encode(text, add_special_tokens=False).ids, text


LONG_WORDS = ["a" * 5000, "abc" * 3000, "".join(chr(ord("a") + (i * i + 7 * i) % 26) for i in range(20000)),
              "Ünïcödé" * 1500, "我爱北京天安门" * 1000]


def test_long_words_without_spaces_match_hf_tokenizers(tmp_path, smollm2_vocab):
    """Words of thousands of symbols: the priority-queue merge gives HF tokenizers' ids."""
    ours = load_tokenizer(_write_bpe_gguf(tmp_path / "tiny.gguf", smollm2_vocab, "smollm"))
    ref = _hf_bpe_tokenizer(smollm2_vocab, "smollm")
    for word in LONG_WORDS:
        assert len(ours.encode(word, add_special=False)) > 100
        assert ours.encode(word, add_special=False) == ref.encode(word, add_special_tokens=False).ids, word[:20]


def test_a_pair_made_by_a_merge_can_outrank_the_merge_in_progress():
    """Merges in rank order, not "every occurrence of the best pair, then the next": with "ab a" ranked
    before "a b", "abab" is aba|b for HF tokenizers and llama.cpp (merging both "a b" first gives ab|ab)."""
    from tokenizers import Tokenizer, models

    vocab, merges = {"a": 0, "b": 1, "ab": 2, "aba": 3, "abab": 4}, [("ab", "a"), ("a", "b"), ("ab", "ab")]
    ref = Tokenizer(models.BPE(vocab, merges))
    expected = [t for t in ref.encode("abab").tokens]
    assert expected == ["aba", "b"]
    assert bpe_merge("abab", {"%s %s" % m: rank for rank, m in enumerate(merges)}) == expected


@pytest.mark.parametrize("pre", ["no-such-pre", None])
def test_unknown_or_missing_pre_warns_and_falls_back_to_gpt2(tmp_path, smollm2_vocab, pre):
    path = _write_bpe_gguf(tmp_path / "tiny.gguf", smollm2_vocab, pre)
    with pytest.warns(UserWarning, match="pre-tokenizer"):
        tok = load_tokenizer(path)
    assert tok.pre == "gpt-2"
    ref = _hf_bpe_tokenizer(smollm2_vocab, "gpt-2")
    assert tok.encode(TOKENIZER_CORPUS[2], add_special=False) == ref.encode(TOKENIZER_CORPUS[2], add_special_tokens=False).ids


# -- errors -------------------------------------------------------------------------------------------

def test_unknown_model_names_the_supported_ones():
    with pytest.raises(TokenizerError, match="llama.*gpt2"):
        load_tokenizer({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})


@pytest.mark.parametrize("metadata, message", [
    ({"tokenizer.ggml.model": "llama"}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"]}, "merges"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "a"]}, "duplicate"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.scores": [0.0],
      "tokenizer.ggml.add_bos_token": False},
     "scores"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.bos_token_id": 9},
     "bos_token_id"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": [],
      "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.add_bos_token": True}, "add_bos_token"),
])
def test_bad_metadata_raises_tokenizer_error(metadata, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TokenizerError, match=message):
            load_tokenizer(metadata)


@pytest.mark.parametrize("module", ["pychat_wasm.tokenizers.base", "pychat_wasm.tokenizers.bpe", "pychat_wasm.tokenizers.spm",
                                    "pychat_wasm.tokenizers.merge", "pychat_wasm.tokenizers.wpm", "pychat_wasm.tokenizers.pretokenizers", "pychat_wasm.tokenizers.unicode_regex"])
def test_docstring_examples(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
