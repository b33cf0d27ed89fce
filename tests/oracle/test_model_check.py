"""Load-time validation: files that lie about their tensors fail at load with a typed error naming the fault.

Each faulty file is a tiny model copied by gguf-py (tests/support/gguf_edit.py, independent of our reader and
writer) with one thing changed. Before these checks such files loaded and then crashed mid-chat with
"cannot reshape", "matmul: mismatch", "'NoneType' ..." or asked numpy for terabytes.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from gguf_edit import rewrite_gguf
from pychat_wasm.browser import chat_worker as worker_api
from pychat_wasm.errors import ContextFullError, InvalidModelError, TokenizerError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.config import ModelConfig
from pychat_wasm.model.forward import Model
from pychat_wasm.model.check import check_model
from pychat_wasm.chat.session import ChatSession
from tiny_models import TINY_SPECS, TINY_TOKENS, write_tiny_model


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_chat")
    return {arch: write_tiny_model(directory / (arch + ".gguf"), arch, chat=True) for arch in TINY_SPECS}


def load_error(path):
    """What the worker answers for this file: the error's type and message (the file must not load)."""
    reply = json.loads(worker_api.load_model(np.fromfile(str(path), np.uint8), path.name))
    assert not reply["ok"], reply
    return reply["error"]["type"], reply["error"]["message"]


def test_an_unchanged_copy_loads_and_computes_the_same_logits(tiny, tmp_path):
    """The editing tool itself changes nothing unless asked to."""
    for arch, path in tiny.items():
        copy = rewrite_gguf(path, tmp_path / (arch + ".gguf"))
        expected = Model.from_gguf(str(path)).forward(TINY_TOKENS[:4], 0)
        np.testing.assert_array_equal(Model.from_gguf(str(copy)).forward(TINY_TOKENS[:4], 0), expected)


def _kv_dim(arch):
    s = TINY_SPECS[arch]
    return s.n_kv_heads * s.head_dim


WRONG_SHAPES = [
    ("llama", "blk.1.attn_k.weight", lambda s: (2 * s.n_kv_heads * s.head_dim, s.dim)),
    ("llama", "blk.0.ffn_down.weight", lambda s: (s.ffn_dim, s.dim)),  # transposed
    ("llama", "output_norm.weight", lambda s: (s.dim + 32,)),
    ("qwen2", "blk.0.attn_q.bias", lambda s: (s.dim // 2,)),
    ("qwen2", "output.weight", lambda s: (s.vocab_size, s.dim * 2)),
    ("gemma3", "blk.3.attn_q_norm.weight", lambda s: (s.head_dim // 2,)),
    ("gemma3", "blk.5.attn_output.weight", lambda s: (s.dim, s.dim)),
    ("qwen3", "blk.1.attn_k_norm.weight", lambda s: (s.dim // s.n_heads,)),  # head_dim is key_length, not this
    ("phi3", "blk.0.attn_qkv.weight", lambda s: (3 * s.n_heads * s.head_dim, s.dim)),  # as if not GQA
    ("phi3", "blk.1.ffn_up.weight", lambda s: (s.ffn_dim, s.dim)),  # up without the gate
]


@pytest.mark.parametrize("arch, tensor, wrong", WRONG_SHAPES, ids=[w[0] + ":" + w[1] for w in WRONG_SHAPES])
def test_a_tensor_of_the_wrong_shape_is_named_with_expected_and_found_shape(tiny, tmp_path, arch, tensor, wrong):
    reader = GGUFReader(str(tiny[arch]))
    expected = tuple(int(d) for d in reversed(next(t for t in reader.tensors if t.name == tensor).shape))
    found = wrong(TINY_SPECS[arch]._replace(vocab_size=expected[0] if tensor == "output.weight" else 0))
    path = rewrite_gguf(tiny[arch], tmp_path / "bad.gguf", tensors={tensor: np.zeros(found, np.float32)})
    kind, message = load_error(path)
    assert kind == "InvalidModelError"
    assert tensor in message and str(expected) in message and str(found) in message


MISSING = [("llama", "blk.0.ffn_norm.weight"), ("llama", "output_norm.weight"), ("llama", "blk.1.ffn_up.weight"),
           ("qwen2", "blk.1.ffn_gate.weight"), ("gemma3", "blk.2.post_ffw_norm.weight"),
           ("gemma3", "blk.4.attn_k_norm.weight"), ("qwen3", "blk.0.attn_q_norm.weight")]


@pytest.mark.parametrize("arch, tensor", MISSING, ids=[m[0] + ":" + m[1] for m in MISSING])
def test_a_missing_tensor_is_named(tiny, tmp_path, arch, tensor):
    kind, message = load_error(rewrite_gguf(tiny[arch], tmp_path / "bad.gguf", tensors={tensor: None}))
    assert kind == "InvalidModelError" and tensor in message


def test_a_phi3_layer_without_its_fused_qkv_is_named(tiny, tmp_path):
    """Not in MISSING: llama.cpp's loader accepts such a file (its phi3 reads attn_qkv as optional; seen with
    tests/support/llama_cpp_load.mjs) and can only fail later; we refuse it at load."""
    kind, message = load_error(rewrite_gguf(tiny["phi3"], tmp_path / "bad.gguf",
                                            tensors={"blk.1.attn_qkv.weight": None}))
    assert kind == "InvalidModelError" and "blk.1.attn_qkv.weight" in message


def test_a_missing_embedding_is_named(tiny, tmp_path):
    kind, message = load_error(rewrite_gguf(tiny["llama"], tmp_path / "bad.gguf", tensors={"token_embd.weight": None}))
    assert kind == "InvalidModelError" and "token_embd.weight" in message


def test_query_norms_without_key_norms_are_refused_in_any_architecture(tiny, tmp_path):
    q_norm = np.ones(TINY_SPECS["llama"].head_dim, np.float32)
    path = rewrite_gguf(tiny["llama"], tmp_path / "bad.gguf", tensors={"blk.0.attn_q_norm.weight": q_norm})
    kind, message = load_error(path)
    assert kind == "InvalidModelError" and "blk.0.attn_k_norm.weight" in message


def test_a_phi3_with_longrope_factors_is_refused_not_run_without_them(tiny, tmp_path):
    factors = np.ones(TINY_SPECS["phi3"].head_dim // 2, np.float32)
    path = rewrite_gguf(tiny["phi3"], tmp_path / "bad.gguf", tensors={"rope_factors_long.weight": factors})
    kind, message = load_error(path)
    assert kind == "UnsupportedArchitectureError" and "LongRoPE" in message and "rope_factors_long.weight" in message


BAD_METADATA = [
    ({"llama.attention.head_count": 3}, "head_count 3 is not a multiple of head_count_kv 2"),
    ({"llama.attention.head_count_kv": 0}, "n_kv_heads is 0"),
    ({"llama.embedding_length": 0}, "dim is 0"),
    ({"llama.block_count": "two"}, "block_count must be an integer"),
    ({"llama.attention.layer_norm_rms_epsilon": float("nan")}, "must be a finite number"),
    ({"llama.rope.freq_base": -1.0}, "rope.freq_base -1 must be positive"),
    ({"llama.vocab_size": 95}, "vocab_size is 95 but token_embd.weight has"),
    ({"llama.rope.dimension_count": 8}, "rope.dimension_count differs"),
]


@pytest.mark.parametrize("metadata, phrase", BAD_METADATA, ids=[str(m[0]) for m in BAD_METADATA])
def test_impossible_hyperparameters_are_refused(tiny, tmp_path, metadata, phrase):
    kind, message = load_error(rewrite_gguf(tiny["llama"], tmp_path / "bad.gguf", metadata=metadata))
    assert kind == "InvalidModelError" and phrase in message


def test_a_vocabulary_that_does_not_match_the_embedding_is_refused(tiny, tmp_path):
    s = TINY_SPECS["llama"]
    n_tokens = len(GGUFReader(str(tiny["llama"])).fields["tokenizer.ggml.tokens"].contents())
    embedding = np.zeros((n_tokens - 1, s.dim), np.float32)
    path = rewrite_gguf(tiny["llama"], tmp_path / "bad.gguf", metadata={"llama.vocab_size": None},
                        tensors={"token_embd.weight": embedding})
    kind, message = load_error(path)
    assert kind == "InvalidModelError"
    assert "the tokenizer has %d tokens but token_embd.weight has %d rows" % (n_tokens, n_tokens - 1) in message


LYING_HEADERS = [
    {"llama.attention.head_count_kv": 2 ** 40, "llama.attention.head_count": 2 ** 41},
    {"llama.attention.key_length": 2 ** 31},
    {"llama.block_count": 2 ** 31},
    {"llama.context_length": 2 ** 31, "llama.attention.head_count_kv": 2 ** 30, "llama.attention.head_count": 2 ** 30},
]


@pytest.mark.parametrize("metadata", LYING_HEADERS, ids=[str(m) for m in LYING_HEADERS])
def test_a_lying_header_is_a_corrupt_file_not_a_huge_allocation(tiny, tmp_path, metadata):
    """Before the checks these asked numpy for 3-30 TiB of KV cache and were reported as out of memory."""
    path = tmp_path / "bad.gguf"
    rewrite_gguf(tiny["llama"], path, metadata={k: v for k, v in metadata.items()})
    tracemalloc.start()
    try:
        kind, message = load_error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kind == "InvalidModelError", message
    assert peak < 16 * path.stat().st_size + 2 ** 20


def _poke(src, dst, tensor, raw):
    """A byte-exact copy of `src` with `raw` written at the start of `tensor`'s data (offset from gguf-py)."""
    shutil.copy(src, dst)
    offset = next(t for t in GGUFReader(str(src)).tensors if t.name == tensor).data_offset
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(raw)
    return dst


NON_FINITE = [
    ("blk.0.attn_norm.weight", np.array([np.nan], np.float32).tobytes()),  # F32 norm
    ("blk.1.ffn_up.weight", np.array([np.inf], np.float32).tobytes()),  # F32 matrix
    ("token_embd.weight", np.array([np.nan], np.float16).tobytes()),  # Q8_0 block scale d
    ("blk.0.attn_q.weight", np.array([1.0, -np.inf], np.float16).tobytes()),  # Q4_1 block minimum m
    ("blk.1.attn_k.weight", np.array([np.inf], np.float16).tobytes()),  # Q5_0 block scale
]


@pytest.mark.parametrize("tensor, raw", NON_FINITE, ids=[n[0] for n in NON_FINITE])
def test_nan_or_infinite_weights_are_reported_at_load(tiny, tmp_path, tensor, raw):
    kind, message = load_error(_poke(tiny["llama"], tmp_path / "bad.gguf", tensor, raw))
    assert kind == "InvalidModelError" and tensor in message and "NaN or infinite" in message


def test_weights_so_large_that_logits_overflow_are_reported_not_chatted_with(tiny, tmp_path):
    s = TINY_SPECS["llama"]
    huge = np.full((s.ffn_dim, s.dim), 3e38, np.float32)
    path = rewrite_gguf(tiny["llama"], tmp_path / "bad.gguf", tensors={"blk.0.ffn_up.weight": huge})
    model = Model.from_gguf(str(path))
    with pytest.raises(InvalidModelError, match="NaN or infinite logits"):
        model.forward(TINY_TOKENS[:3], 0)


def test_a_prompt_the_vocabulary_cannot_write_is_a_typed_error(tiny_models):
    """The placeholder vocabulary of the oracle models has no byte tokens: "Hi" encodes to nothing."""
    session = ChatSession.from_gguf(GGUFFile.open(str(tiny_models["llama"][0])))
    with pytest.raises(TokenizerError, match="encodes to no tokens"):
        list(session.reply([{"role": "user", "content": "Hi"}]))


def test_the_real_model_passes_and_a_wrong_head_count_does_not(smollm2_path):
    gguf = GGUFFile.open(str(smollm2_path))
    config = ModelConfig.from_gguf(gguf)
    check_model(gguf, config)
    with pytest.raises(InvalidModelError, match=r"blk.0.attn_k.weight has shape \(192, 576\), but the metadata "
                                                r"implies \(576, 576\)"):
        check_model(gguf, dataclasses.replace(config, n_kv_heads=9))


def test_a_rendered_prompt_far_beyond_the_context_is_refused_before_tokenizing(tiny, tmp_path):
    """A template that writes 200,000 characters for a 64-token context: the BPE would spend seconds on it."""
    path = rewrite_gguf(tiny["llama"], tmp_path / "long.gguf",
                        metadata={"tokenizer.chat_template": "{{ 'tok' * 66666 }}"})
    session = ChatSession.from_gguf(GGUFFile.open(str(path)))
    with pytest.raises(ContextFullError, match="199998 characters"):
        list(session.reply([{"role": "user", "content": "Hi"}]))


@pytest.fixture(scope="module")
def llama_cpp_verdicts(tiny, tmp_path_factory):
    """llama.cpp's load of every faulty file of WRONG_SHAPES and MISSING (one node run): {(arch, tensor): result}."""
    directory = tmp_path_factory.mktemp("faulty")
    files = {}
    for arch, tensor, wrong in WRONG_SHAPES:
        reader = GGUFReader(str(tiny[arch]))
        rows = int(next(t for t in reader.tensors if t.name == tensor).shape[-1])
        found = wrong(TINY_SPECS[arch]._replace(vocab_size=rows))
        files[(arch, tensor)] = rewrite_gguf(tiny[arch], directory / ("shape-%d.gguf" % len(files)),
                                             tensors={tensor: np.zeros(found, np.float32)})
    for arch, tensor in MISSING:
        files[(arch, "missing " + tensor)] = rewrite_gguf(tiny[arch], directory / ("missing-%d.gguf" % len(files)),
                                                          tensors={tensor: None})
    paths = [str(p) for p in files.values()] + [str(p) for p in tiny.values()]
    done = subprocess.run(["node", str(REPO / "tests" / "support" / "llama_cpp_load.mjs")], input=json.dumps(paths),
                          capture_output=True, text=True, cwd=str(REPO), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    by_path = {r["path"]: r for r in json.loads(done.stdout.strip().splitlines()[-1])}
    intact = [((arch, "intact"), path) for arch, path in tiny.items()]
    return {key: by_path[str(path)] for key, path in list(files.items()) + intact}


@pytest.mark.slow
def test_llama_cpp_refuses_the_same_files_and_names_the_same_tensors(llama_cpp_verdicts):
    """The reference loader agrees: every file our checks refuse, llama.cpp refuses too, naming the tensor."""
    for (arch, fault), verdict in llama_cpp_verdicts.items():
        if fault == "intact":
            assert verdict["loaded"], (arch, verdict)
            continue
        tensor = fault.replace("missing ", "")
        assert not verdict["loaded"] and any(tensor in line for line in verdict["log"]), (arch, fault, verdict)
