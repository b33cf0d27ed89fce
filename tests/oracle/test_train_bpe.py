"""The BPE tokenizer trainer against independent references.

- HF `tokenizers`: a `tokenizers.Tokenizer` built from our trained vocabulary and merges encodes like our
  BPETokenizer built from `gguf_tokenizer_metadata`; HF's own BpeTrainer learns the very same merges.
- transformers: the tokenizer its GGUF converter builds from a tiny GGUF carrying the trained vocabulary.
- The trainer's own promises: determinism, special tokens never merged, vocab_size, typed errors, speed.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import regex
import transformers

from pychat_wasm.errors import TrainingDataError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers import load_tokenizer
from pychat_wasm.tokenizers.base import CONTROL, NORMAL
from pychat_wasm.tokenizers.bpe import BPETokenizer
from pychat_wasm.train.bpe import BYTE_TOKENS, SPECIAL_TOKENS, gguf_tokenizer_metadata, train_bpe

from gguf_files import write_gguf
from texts import BPE_PROBES

PARAGRAPHS = [
    "The lighthouse keeper kept a notebook of every ship that passed the point. Some nights there were "
    "none at all, and he wrote only the weather: wind from the west, light rain, a low grey sea. On other "
    "nights the harbour filled with fishing boats coming home late, their lamps swinging, and he wrote "
    "their names as fast as he could read them.\n",
    "She counted 1,024 steps from the bottom of the tower to the lamp room, then counted again and got "
    "1,023. \"It's the seventh step,\" she said. \"It's lower than the others; you don't notice it until "
    "you've climbed it a thousand times.\" We'll never know who was right; I'm sure they both were.\n",
    "Recipe for the keeper's soup: 2 onions, 3 carrots, 500 g of potatoes, salt, pepper and a handful "
    "of parsley. Cook for 40 minutes.\n\tStir now and then.\n\tServe it hot, with bread.\n",
    "def count_ships(log):\n    total = 0\n    for line in log:\n        if line.startswith(\"ship\"):\n"
    "            total += 1\n    return total\n",
    "<|im_start|>user\nHow many ships passed the lighthouse tonight?<|im_end|>\n"
    "<|im_start|>assistant\nThree ships passed the lighthouse tonight, all of them fishing boats.<|im_end|>\n"
    "<|endoftext|>",
]
CORPUS = PARAGRAPHS * 3
VOCAB_SIZE = len(SPECIAL_TOKENS) + 256 + 200


@pytest.fixture(scope="module")
def vocab():
    return train_bpe(CORPUS, VOCAB_SIZE)


@pytest.fixture(scope="module")
def ours(vocab):
    return BPETokenizer(gguf_tokenizer_metadata(vocab))


def _hf_tokenizer(vocab):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model = models.BPE({t: i for i, t in enumerate(vocab.tokens)}, [tuple(m.split(" ")) for m in vocab.merges])
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(vocab.tokens, vocab.token_types) if kind == CONTROL])
    return tok


# -- layout and the tokenizer built from it -----------------------------------------------------------

def test_layout_specials_then_bytes_then_one_token_per_merge(vocab):
    n_special = len(SPECIAL_TOKENS)
    assert len(vocab.tokens) == len(vocab.token_types) == VOCAB_SIZE
    assert vocab.tokens[:n_special] == list(SPECIAL_TOKENS)
    assert vocab.token_types == [CONTROL] * n_special + [NORMAL] * (VOCAB_SIZE - n_special)
    assert vocab.tokens[n_special:n_special + 256] == BYTE_TOKENS
    learned = vocab.tokens[n_special + 256:]
    assert [m.replace(" ", "") for m in vocab.merges] == learned
    assert len(set(vocab.tokens)) == VOCAB_SIZE


def test_metadata_builds_the_tokenizer_through_the_load_path(vocab):
    metadata = gguf_tokenizer_metadata(vocab)
    tok = load_tokenizer(metadata)
    assert (tok.kind, tok.pre, tok.vocab_size) == ("bpe", "gpt-2", VOCAB_SIZE)
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.unk_id) == (1, 2, False, None)
    assert metadata["tokenizer.ggml.padding_token_id"] == 2
    assert {0, 2} <= tok.end_of_turn_ids


@pytest.mark.parametrize("text", BPE_PROBES)
def test_ids_match_hf_tokenizers_and_round_trip(vocab, ours, text):
    ref = _hf_tokenizer(vocab)
    ids = ours.encode(text, add_special=False)
    assert ids == ref.encode(text, add_special_tokens=False).ids
    assert ours.decode(ids) == text
    assert ref.decode(ids, skip_special_tokens=False) == text


def test_learned_tokens_cover_the_corpus_words(ours):
    assert len(ours.encode(" lighthouse", add_special=False)) == 1
    assert len(ours.encode("zygomorphic", add_special=False)) > 3  # never seen: spelled in pieces


# -- training -------------------------------------------------------------------------------------------

def _hf_bpe_trainer(texts, vocab_size, min_frequency):
    """HF's BpeTrainer on the same words: (tokens in id order, merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(texts, trainer)
    model = json.loads(hf.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return sorted(model["vocab"], key=model["vocab"].get), merges


def test_same_vocabulary_as_hf_bpe_trainer():
    """HF's BpeTrainer does not split added tokens out of its training text, so it gets the corpus in the
    pieces between the special tokens (what our trainer trains on)."""
    pieces = [p for text in CORPUS for p in regex.split("|".join(map(regex.escape, SPECIAL_TOKENS)), text)]
    ours = train_bpe(CORPUS, VOCAB_SIZE)
    assert _hf_bpe_trainer(pieces, VOCAB_SIZE, 2) == (ours.tokens, ours.merges)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("min_frequency", [1, 2])
def test_same_vocabulary_as_hf_bpe_trainer_on_tie_heavy_corpora(seed, min_frequency):
    rng = random.Random(seed)
    texts = ["".join(rng.choice("ab c\n") for _ in range(rng.randint(1, 40))) for _ in range(30)]
    ours = train_bpe(texts, 2000, min_frequency=min_frequency)
    assert _hf_bpe_trainer(texts, 2000, min_frequency) == (ours.tokens, ours.merges)


def test_training_is_deterministic_and_ignores_text_order(vocab):
    assert train_bpe(CORPUS, VOCAB_SIZE) == vocab
    assert train_bpe(list(reversed(CORPUS)), VOCAB_SIZE) == vocab


def test_special_tokens_in_the_corpus_are_not_merged(vocab, ours):
    chat = train_bpe(["<|im_start|>hello<|im_end|>"] * 20, VOCAB_SIZE)
    assert [m.replace(" ", "") for m in chat.merges] == ["el", "hel", "lo", "hello"]  # ties: smaller ids
    assert not [t for t in vocab.tokens[len(SPECIAL_TOKENS):] if "<|" in t or "|>" in t or "_start" in t]
    assert ours.encode("<|im_start|>", add_special=False) == [1]


def test_vocab_size_and_min_frequency_bound_the_merges():
    assert len(train_bpe(CORPUS, len(SPECIAL_TOKENS) + 256).tokens) == len(SPECIAL_TOKENS) + 256
    everything = train_bpe(PARAGRAPHS, 100_000)
    assert len(everything.tokens) < 100_000  # stopped: no pair occurs twice any more
    assert len(train_bpe(PARAGRAPHS, 100_000, min_frequency=4).merges) < len(everything.merges)
    assert len(train_bpe(PARAGRAPHS, 100_000, min_frequency=1).merges) > len(everything.merges)


def test_custom_special_tokens():
    vocab = train_bpe(CORPUS, 400, special_tokens=("<pad>", "<|im_start|>", "<|im_end|>", "<tool>"))
    assert vocab.tokens[:4] == ["<pad>", "<|im_start|>", "<|im_end|>", "<tool>"]
    assert "<|endoftext|>" not in vocab.tokens
    metadata = gguf_tokenizer_metadata(vocab)
    assert (metadata["tokenizer.ggml.bos_token_id"], metadata["tokenizer.ggml.eos_token_id"]) == (1, 2)


@pytest.mark.parametrize("texts, vocab_size, message", [
    ([], VOCAB_SIZE, "no text"),
    (["", "<|im_start|><|im_end|>"], VOCAB_SIZE, "no text"),
    (CORPUS, len(SPECIAL_TOKENS) + 255, "too small"),
])
def test_errors_are_typed(texts, vocab_size, message):
    with pytest.raises(TrainingDataError, match=message):
        train_bpe(texts, vocab_size)


def test_special_tokens_must_be_distinct():
    with pytest.raises(TrainingDataError, match="distinct"):
        train_bpe(CORPUS, VOCAB_SIZE, special_tokens=("<s>", "!"))
    with pytest.raises(TrainingDataError, match="not a special token"):
        gguf_tokenizer_metadata(train_bpe(CORPUS, VOCAB_SIZE, special_tokens=("<s>", "</s>")))


def test_thousand_merges_on_100kb_in_seconds():
    source = "".join(p.read_text(encoding="utf-8") for p in sorted(Path("pychat_wasm").rglob("*.py")))
    texts = (source * 2)[:100_000].splitlines(keepends=True)
    start = time.perf_counter()
    vocab = train_bpe(texts, len(SPECIAL_TOKENS) + 256 + 1000)
    assert time.perf_counter() - start < 5.0
    assert len(vocab.merges) == 1000


# -- a GGUF carrying the trained tokenizer, read by transformers ---------------------------------------

def _write_tiny_llama(path: Path, metadata) -> Path:
    """A complete one-layer llama model (random float32 weights) with the given tokenizer metadata."""
    dim, ffn, n_heads, vocab_size = 32, 64, 2, len(metadata["tokenizer.ggml.tokens"])
    hyperparameters = {
        "general.name": "tiny-trained-tokenizer", "context_length": 64, "embedding_length": dim, "block_count": 1,
        "feed_forward_length": ffn, "head_count": n_heads, "head_count_kv": n_heads, "layer_norm_rms_eps": 1e-5,
        "rope_dimension_count": dim // n_heads, "vocab_size": vocab_size,
    }
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab_size, dim), "output_norm.weight": (dim,),
              "blk.0.attn_norm.weight": (dim,), "blk.0.ffn_norm.weight": (dim,),
              "blk.0.attn_q.weight": (dim, dim), "blk.0.attn_k.weight": (dim, dim),
              "blk.0.attn_v.weight": (dim, dim), "blk.0.attn_output.weight": (dim, dim),
              "blk.0.ffn_gate.weight": (ffn, dim), "blk.0.ffn_up.weight": (ffn, dim),
              "blk.0.ffn_down.weight": (dim, ffn)}
    return write_gguf(path, "llama", {**hyperparameters, **metadata},
                      [(name, rng.standard_normal(shape).astype(np.float32)) for name, shape in shapes.items()])


@pytest.mark.slow
def test_gguf_tokenizer_matches_transformers(tmp_path, vocab):
    metadata = gguf_tokenizer_metadata(vocab)
    path = _write_tiny_llama(tmp_path / "tiny.gguf", metadata)
    read_back = GGUFFile.open(str(path)).metadata
    assert {key: read_back[key] for key in metadata} == metadata
    ours = load_tokenizer(path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert len(hf) == VOCAB_SIZE
    for text in BPE_PROBES:
        ids = ours.encode(text, add_special=False)
        assert ids == hf.encode(text, add_special_tokens=False), text
        assert hf.decode(ids, clean_up_tokenization_spaces=False) == text
    assert ours.encode("Hi") == hf.encode("Hi")  # neither adds BOS
