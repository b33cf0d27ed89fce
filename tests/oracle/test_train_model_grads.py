"""The whole trainable transformer's loss and every parameter's gradient against torch autograd.

pychat_wasm.train.transformer.loss_and_grads (hand-written backward) versus autograd through the independent
torch model of tests/support/torch_llama.py, from the same float64 parameters and the same RoPE tables, to a relative
error (max|a - b| / max|b|) below 1e-8 for the loss and for each gradient: llama with a tied and with a
separate head, qwen2 (q/k/v biases, rotate-half RoPE), LoRA adapters on a frozen base, LoRA beside a trained
base, and a padded batch whose loss mask drops the padding.
"""
from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import torch

from pychat_wasm.model.layers import rope_angles, rope_frequencies
from pychat_wasm.train.transformer import llama_config, loss_and_grads, param_shapes

import torch_llama  # tests/support/torch_llama.py

torch.set_num_threads(1)

TOL = 1e-8
ATTENTION = ("attn_q", "attn_k", "attn_v", "attn_output")
ALL_PROJECTIONS = ATTENTION + ("ffn_gate", "ffn_up", "ffn_down")

# name -> (config arguments, tied head, architecture, biases, LoRA projections, frozen base, padded batch)
CASES = {
    "llama_tied_gqa": (dict(n_heads=4, n_kv_heads=2), True, "llama", False, (), False, False),
    "llama_untied_mha": (dict(n_heads=4, n_kv_heads=4), False, "llama", False, (), False, False),
    "qwen2_bias_neox": (dict(n_heads=4, n_kv_heads=1), False, "qwen2", True, (), False, False),
    "lora_qkvo_frozen": (dict(n_heads=4, n_kv_heads=2), True, "llama", False, ATTENTION, True, False),
    "lora_all_trained": (dict(n_heads=4, n_kv_heads=2), False, "qwen2", True, ALL_PROJECTIONS, False, False),
    "padded_batch": (dict(n_heads=4, n_kv_heads=2), True, "llama", False, (), False, True),
}
LORA_RANK, LORA_SCALE = 3, 1.5


def build(case: str):
    """(cfg, float64 params, ids, targets, loss mask, trainable names or None) of a case."""
    kwargs, tied, arch, biases, lora, frozen, padded = CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    cfg = llama_config(dim=32, n_layers=2, ffn_dim=48, vocab_size=40, rope_base=500.0, **kwargs)
    if arch == "qwen2":
        cfg = dataclasses.replace(cfg, arch="qwen2")  # rotate-half RoPE
    params = {}
    # Random weights far from the init's near-uniform logits, so every path carries a real gradient.
    for name, shape in param_shapes(cfg, tied_output=tied).items():
        if len(shape) == 1:
            params[name] = 1.0 + 0.3 * rng.standard_normal(shape)  # norms
        else:
            params[name] = rng.standard_normal(shape) / np.sqrt(shape[1])
    for i in range(cfg.n_layers):
        blk = "blk.%d." % i
        if biases:
            for proj in ("attn_q", "attn_k", "attn_v"):
                params[blk + proj + ".bias"] = 0.5 * rng.standard_normal(params[blk + proj + ".weight"].shape[0])
        for proj in lora:
            n_out, n_in = params[blk + proj + ".weight"].shape
            # lora_b is nonzero (unlike a fresh adapter) so that lora_a gets a gradient too
            params[blk + proj + ".lora_a"] = rng.standard_normal((LORA_RANK, n_in)) / np.sqrt(n_in)
            params[blk + proj + ".lora_b"] = 0.5 * rng.standard_normal((n_out, LORA_RANK))
    B, T = 3, 9
    tokens = rng.integers(0, cfg.vocab_size, (B, T + 1))
    ids, targets = tokens[:, :-1], tokens[:, 1:]
    mask = np.ones((B, T))
    if padded:
        for b, length in enumerate([T, 6, 3]):  # sequences padded at the end with token 0
            ids[b, length:], targets[b, length:], mask[b, length:] = 0, 0, 0
    trainable = {n for n in params if ".lora_" in n} if frozen else None
    return cfg, params, ids, targets, mask, trainable


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_every_gradient_match_torch_autograd(case):
    cfg, params, ids, targets, mask, trainable = build(case)
    loss, grads = loss_and_grads(cfg, params, ids, targets, mask, lora_scale=LORA_SCALE, trainable=trainable)

    cos, sin = rope_angles(np.arange(ids.shape[1]), rope_frequencies(cfg.head_dim, cfg.rope_base))
    t_params = torch_llama.to_torch(params, trainable)
    t_loss = torch_llama.loss(cfg, t_params, torch.from_numpy(ids), torch.from_numpy(targets),
                              torch.from_numpy(mask), torch.from_numpy(cos), torch.from_numpy(sin), LORA_SCALE)
    t_loss.backward()

    assert abs(loss - t_loss.item()) / abs(t_loss.item()) < TOL
    expected = set(params) if trainable is None else trainable
    assert set(grads) == expected  # gradients of exactly the trainable parameters, no more
    errors = {}
    for name in sorted(expected):
        assert grads[name].shape == params[name].shape and grads[name].dtype == np.float64, name
        ref = t_params[name].grad.numpy()
        assert np.abs(ref).max() > 0, name  # the case exercises this parameter
        errors[name] = rel_err(grads[name], ref)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, (worst, errors[worst])


def test_padding_does_not_change_the_real_positions():
    """Loss and gradients of a padded batch equal those of its unpadded prefix (padding is at the end)."""
    cfg, params, ids, targets, mask, _ = build("padded_batch")
    loss, grads = loss_and_grads(cfg, params, ids, targets, mask)
    # Row 0 is unpadded; rows 1 and 2 hold 6 and 3 real positions.
    per_row = [loss_and_grads(cfg, params, ids[b:b + 1, :n], targets[b:b + 1, :n], mask[b:b + 1, :n])
               for b, n in enumerate([9, 6, 3])]
    counts = np.array([9, 6, 3]) / 18.0
    assert abs(loss - sum(c * l for c, (l, _) in zip(counts, per_row))) < 1e-12
    for name in grads:
        combined = sum(c * g[name] for c, (_, g) in zip(counts, per_row))
        assert rel_err(grads[name], combined) < TOL, name
