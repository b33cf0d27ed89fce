"""The forward pass against transformers (torch CPU), which loads the same GGUF files independently.

Tiny random models of every architecture (tests/support/tiny_models.py) must give transformers' logits within
1e-3 under every weight policy that reproduces the file's numbers, both when the prompt goes through
as one batch and token by token through the KV cache. The real models must agree within 1e-2, and
greedy decoding of the golden SmolLM2 prompt must give the reference ids recorded with transformers and llama.cpp.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import dequantize, quantize

import pychat_wasm.model.forward as model_module
from pychat_wasm.errors import ContextFullError, InvalidSettingError, UnsupportedArchitectureError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.config import DEFAULT_CONTEXT_CAP
from pychat_wasm.model.fit_check import fit_check
from pychat_wasm.model.forward import Model, attention_mask
from pychat_wasm.model.matrices import Float32Matrix, Int8Matrix, QuantizedMatrix
from gguf_files import write_gguf
from texts import GEMMA_TOKENS, GOLDEN_IDS, GOLDEN_PROMPT
from tiny_models import TINY_SPECS, TINY_TOKENS, transformers_logits

ARCHS = sorted(TINY_SPECS)


def decode_step_by_step(model, tokens, n_prompt):
    """Logits of positions n_prompt-1.. when the first n_prompt tokens go as a batch (from position 0, whatever
    the cache held), the rest one by one."""
    rows = [model.forward(tokens[:n_prompt], 0)]
    rows += [model.forward([t], pos) for pos, t in enumerate(tokens) if pos >= n_prompt]
    return np.stack(rows)


# -- tiny models: every architecture x policy ------------------------------------------------------

@pytest.mark.parametrize("policy", ["float32", "quantized"])
@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_batch_matches_transformers(tiny_models, arch, policy):
    path, expected = tiny_models[arch]
    model = Model.from_gguf(path, policy=policy)
    assert model.policy == policy and model.config.arch == arch
    # both policies compute with the file's exact weights: within 1e-4 of transformers (float32 sums differ)
    np.testing.assert_allclose(model.forward(TINY_TOKENS, 0, all_logits=True), expected, rtol=0, atol=1e-4)
    assert model.cache.ids == TINY_TOKENS  # the cache records the ids whose keys and values it holds


@pytest.mark.parametrize("policy", ["float32", "quantized"])
@pytest.mark.parametrize("arch", ARCHS)
def test_decode_through_kv_cache_matches_transformers(tiny_models, arch, policy):
    path, expected = tiny_models[arch]
    model = Model.from_gguf(path, policy=policy)
    np.testing.assert_allclose(decode_step_by_step(model, TINY_TOKENS, 3), expected[2:], rtol=0, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_policy_is_close(tiny_models, arch):
    """int8 requantizes the Q5/F16 test weights inexactly: a looser, relative tolerance."""
    path, expected = tiny_models[arch]
    got = Model.from_gguf(path, policy="int8").forward(TINY_TOKENS, 0, all_logits=True)
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()


@pytest.mark.parametrize("arch", ARCHS)
def test_rewriting_from_an_earlier_position_discards_the_old_tail(tiny_models, arch):
    path, expected = tiny_models[arch]
    model = Model.from_gguf(path, policy="float32")
    model.forward([40, 41, 42, 43, 44, 45, 46, 47, 48, 49], 0)  # a different conversation
    model.forward(TINY_TOKENS[:5], 0)
    np.testing.assert_allclose(model.forward(TINY_TOKENS[3:], 3, all_logits=True), expected[3:], rtol=0, atol=1e-3)


def test_long_prompt_in_batches_matches_transformers(tiny_models, monkeypatch):
    monkeypatch.setattr(model_module, "FORWARD_BATCH_TOKENS", 5)
    path, expected = tiny_models["gemma3"]
    np.testing.assert_allclose(Model.from_gguf(path).forward(TINY_TOKENS, 0, all_logits=True), expected, atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_chunks_without_logits_fill_the_same_cache(tiny_models, arch, monkeypatch):
    """logits=False skips only the vocabulary head: the cache is the same, so the next chunk's logits are too."""
    monkeypatch.setattr(model_module, "FORWARD_BATCH_TOKENS", 3)  # the 4-token chunks span two batches
    path, expected = tiny_models[arch]
    with_logits, without = Model.from_gguf(path, policy="float32"), Model.from_gguf(path, policy="float32")
    head_rows = []
    vocab_head = without.output.matmul
    monkeypatch.setattr(without.output, "matmul", lambda x: head_rows.append(x.shape[0]) or vocab_head(x))
    for begin in (0, 4):
        with_logits.forward(TINY_TOKENS[begin:begin + 4], begin)
        assert without.forward(TINY_TOKENS[begin:begin + 4], begin, logits=False) is None
    assert head_rows == [] and without.cache.ids == with_logits.cache.ids == TINY_TOKENS[:8]
    np.testing.assert_array_equal(without.cache.k, with_logits.cache.k)
    np.testing.assert_array_equal(without.cache.v, with_logits.cache.v)
    last = without.forward(TINY_TOKENS[8:], 8)
    np.testing.assert_array_equal(last, with_logits.forward(TINY_TOKENS[8:], 8))
    np.testing.assert_allclose(last, expected[-1], rtol=0, atol=1e-3)
    assert head_rows == [1]  # only the last token's logits, once


def test_gemma3_layers_follow_the_sliding_window_pattern(tiny_models):
    config = Model.from_gguf(tiny_models["gemma3"][0]).config
    assert [config.layer_window(i) for i in range(6)] == [4, 4, 4, 4, 4, 0]
    assert [config.layer_rope_base(i) for i in range(6)] == [10000.0] * 5 + [1e6]
    assert config.embed_scale == pytest.approx(8.0) and config.head_dim == 256


def test_qwen3_reads_its_head_dimension_from_key_length(tiny_models):
    """Not dim / n_heads (16): the tiny qwen3's 4 heads of 128 (the logits above agree with transformers)."""
    model = Model.from_gguf(tiny_models["qwen3"][0], policy="float32")
    assert model.config.head_dim == 128 and model.layers[0].wq.shape == (4 * 128, 64)
    assert model.cache.k.shape[-1] == 128


def test_phi3_fused_matrices_are_cut_into_views_of_the_file(tiny_models):
    """attn_qkv holds q, k, v (GQA: 64, 32, 32 rows) and ffn_up holds gate then up; kept quantized, each part
    is a view of the file's bytes, not a copy."""
    path = tiny_models["phi3"][0]
    gguf = GGUFFile.open(str(path))
    layer = Model.from_gguf(gguf, policy="quantized").layers[1]
    assert [m.shape for m in (layer.wq, layer.wk, layer.wv)] == [(64, 64), (32, 64), (32, 64)]
    assert layer.w_gate.shape == layer.w_up.shape == (96, 64)
    qkv, gate_up = gguf.tensor_bytes("blk.1.attn_qkv.weight"), gguf.tensor_bytes("blk.1.ffn_up.weight")
    assert all(np.shares_memory(m.raw, qkv) for m in (layer.wq, layer.wk, layer.wv))
    assert all(np.shares_memory(m.raw, gate_up) for m in (layer.w_gate, layer.w_up))


def test_attention_mask_is_causal_and_windowed():
    first, mask = attention_mask(start_pos=5, n_tokens=2, window=3)
    assert first == 3  # positions 0..2 are outside both queries' windows
    assert (mask == 0).tolist() == [[True, True, True, False], [False, True, True, True]]


# -- configuration, limits and errors --------------------------------------------------------------

def test_context_length_default_and_override(tiny_models):
    path = tiny_models["llama"][0]
    assert Model.from_gguf(path).config.context_length == min(TINY_SPECS["llama"].context_length, DEFAULT_CONTEXT_CAP)
    model = Model.from_gguf(path, context_length=8)
    assert model.cache.k.shape == (2, 2, 8, 16)  # [n_layers, n_kv_heads, context, head_dim]
    for bad in (65, 0, 8.0, True, "8"):  # beyond the trained 64, or not an integer
        with pytest.raises(InvalidSettingError, match="context_length must be between 1 and the model's 64 tokens, "
                                                      "not %s$" % re.escape(repr(bad))):
            Model.from_gguf(path, context_length=bad)
    assert Model.from_gguf(path, context_length=64).config.context_length == 64


def test_context_full_error_says_how_many_tokens(tiny_models):
    model = Model.from_gguf(tiny_models["llama"][0], context_length=8)
    model.forward(TINY_TOKENS[:6], 0)
    with pytest.raises(ContextFullError, match="9 tokens .* context of 8 tokens"):
        model.forward(TINY_TOKENS[6:9], 6)
    assert model.forward(TINY_TOKENS[6:8], 6).shape == (TINY_SPECS["llama"].vocab_size,)  # exactly full is fine


def test_bad_positions_and_ids_are_refused(tiny_models):
    model = Model.from_gguf(tiny_models["llama"][0])
    model.forward(TINY_TOKENS[:3], 0)
    with pytest.raises(InvalidSettingError, match="gap"):
        model.forward([5], 4)
    with pytest.raises(InvalidSettingError, match="token ids"):
        model.forward([TINY_SPECS["llama"].vocab_size], 3)
    with pytest.raises(InvalidSettingError, match="all_logits asks for the logits that logits=False skips"):
        model.forward([5], 3, all_logits=True, logits=False)
    with pytest.raises(InvalidSettingError, match="unknown weight policy"):
        Model.from_gguf(tiny_models["llama"][0], policy="float16")


def test_unknown_architecture_names_the_supported_ones(tmp_path):
    path = write_gguf(tmp_path / "gpt2.gguf", "gpt2", tensors=[("token_embd.weight", np.zeros((4, 32), np.float32))])
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2'.*llama, qwen2, gemma3"):
        Model.from_gguf(path)


def test_auto_policy_is_the_fit_checks_best_against_the_same_limit(tiny_models):
    """One rule (load_plan.py): a load uses the fastest policy whose file + allocated weights + KV cache fit the
    memory limit, which is the fit check's "best" at that context; with none, the smallest (quantized)."""
    path = tiny_models["qwen2"][0]
    gguf = GGUFFile.open(str(path))
    sizes = {p: Model.from_gguf(path, policy=p).memory_bytes() for p in ("float32", "int8", "quantized")}
    assert sizes["float32"] > 2 * max(sizes["int8"], sizes["quantized"])
    assert Model.from_gguf(path).policy == fit_check(gguf)["best"] == "float32"  # against the heap by default
    for policy, extra in (("float32", 0), ("int8", sizes["int8"])):  # the int8 weights and cache, and the file
        limit = gguf.size + extra if extra else 10 ** 9
        assert Model.from_gguf(path, memory_limit=limit).policy == policy == fit_check(gguf, memory_limit=limit)["best"]
    assert Model.from_gguf(path, memory_limit=1000).policy == "quantized"  # none fits: the least memory
    assert fit_check(gguf, memory_limit=1000)["best"] is None


# -- int8 storage ---------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0])
def test_int8_holds_q4_1_and_q8_0_blocks_exactly(qtype):
    """A Q4_1 block's 16 levels span its [min, max]; Q8_0's levels are multiples of absmax/127."""
    rng = np.random.default_rng(1)
    raw = quantize(rng.standard_normal((50, 96)).astype(np.float32), qtype)
    reference = dequantize(raw, qtype)  # gguf-py's float32 weights
    int8 = Int8Matrix.from_matrix(QuantizedMatrix(raw.reshape(-1), int(qtype), (50, 96)))
    np.testing.assert_allclose(int8.dequantize_rows(0, 50), reference, rtol=1e-6, atol=1e-6)


def test_int8_error_is_bounded_for_arbitrary_weights():
    rng = np.random.default_rng(2)
    weights = rng.standard_normal((40, 64)).astype(np.float32)
    int8 = Int8Matrix.from_matrix(Float32Matrix(weights))
    blocks = weights.reshape(40, 2, 32)
    step = (blocks.max(axis=2) - blocks.min(axis=2)) / 255  # the coarser of the two grids' steps
    error = np.abs(int8.dequantize_rows(0, 40) - weights).reshape(40, 2, 32).max(axis=2)
    assert (error <= step / 2 * 1.001).all()
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(int8.matmul(x), x @ int8.dequantize_rows(0, 40).T, rtol=1e-5, atol=1e-5)


# -- the real models -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def smollm2_reference(smollm2_path):
    return transformers_logits(smollm2_path, GOLDEN_PROMPT)


@pytest.mark.slow
def test_smollm2_matches_transformers_and_the_golden_answer(smollm2_path, smollm2_reference):
    model = Model.from_gguf(smollm2_path, policy="float32")
    assert (model.config.n_layers, model.config.n_heads, model.config.n_kv_heads) == (30, 9, 3)
    logits = model.forward(GOLDEN_PROMPT, 0, all_logits=True)
    np.testing.assert_allclose(logits, smollm2_reference, rtol=0, atol=1e-2)
    top = np.argsort(logits[-1])[::-1][:3]
    assert top.tolist() == [504, 38634, 7026]  # transformers: 29.78, 28.30, 27.07
    np.testing.assert_allclose(logits[-1, top], [29.78, 28.30, 27.07], atol=1e-2)
    answer, token = [], int(logits[-1].argmax())
    while len(answer) < len(GOLDEN_IDS):
        answer.append(token)
        token = int(model.forward([token], len(model.cache.ids)).argmax())
    assert answer == GOLDEN_IDS


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["int8", "quantized"])
def test_smollm2_other_policies_decode_like_transformers(smollm2_path, smollm2_reference, policy):
    """SmolLM2 is Q4_1 + Q8_0 only, which int8 holds exactly: every policy gives the same numbers."""
    model = Model.from_gguf(smollm2_path, policy=policy)
    got = decode_step_by_step(model, GOLDEN_PROMPT, len(GOLDEN_PROMPT) - 4)
    np.testing.assert_allclose(got, smollm2_reference[-5:], rtol=0, atol=1e-2)


@pytest.mark.slow
def test_gemma3_matches_transformers(gemma3_path):
    expected = transformers_logits(gemma3_path, GEMMA_TOKENS)
    model = Model.from_gguf(GGUFFile.open(str(gemma3_path)), policy="quantized")
    assert model.config.arch == "gemma3" and model.config.head_dim == 256
    np.testing.assert_allclose(model.forward(GEMMA_TOKENS, 0, all_logits=True), expected, rtol=0, atol=1e-2)
    np.testing.assert_allclose(decode_step_by_step(model, GEMMA_TOKENS, 6), expected[5:], rtol=0, atol=1e-2)
