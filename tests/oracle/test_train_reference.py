"""llm.c's check of a trainer: the same model, weights and batch trained for 10 steps here and in torch.

The numpy side is the trainer's own loop: loss_and_grads -> clip_grad_norm(1.0) -> AdamW step with the
learning-rate schedule. The torch side is written independently: the weights as leaf tensors through
tests/support/torch_llama.py, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW with weight decay on the matrices
only, and the schedule's formula written again here from its description. Both run in float32; the ten
losses must agree within 5e-6 (measured 2.1e-6), the loss must fall, and the final weights must agree within 1e-3.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pychat_wasm.model.layers import rope_angles, rope_frequencies
from pychat_wasm.train.optim import AdamW, clip_grad_norm, learning_rate
from pychat_wasm.train.transformer import init_params, llama_config, loss_and_grads

import torch_llama  # tests/support/torch_llama.py

torch.set_num_threads(1)

STEPS, PEAK_LR, WARMUP = 10, 1e-2, 2
WEIGHT_DECAY, BETAS, MAX_NORM = 0.1, (0.9, 0.95), 1.0
LOSS_TOLERANCE = 5e-6  # float32 losses over 10 steps against torch's (measured: 2.1e-6)


def schedule(step: int) -> float:
    """Linear warm-up to the peak over WARMUP steps, then a cosine from the peak to a tenth of it."""
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    low = 0.1 * PEAK_LR
    return low + (PEAK_LR - low) * (1 + math.cos(math.pi * progress)) / 2


@pytest.fixture(scope="module")
def setup():
    cfg = llama_config(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, vocab_size=128)
    params = init_params(cfg, seed=1234)  # float32, tied head
    rng = np.random.default_rng(7)
    B, T = 4, 32
    tokens = rng.integers(0, cfg.vocab_size, (B, T + 1))
    ids, targets = tokens[:, :-1].copy(), tokens[:, 1:].copy()
    mask = np.ones((B, T), np.float32)
    mask[:, :4] = 0  # a "prompt" the loss ignores
    for b, length in enumerate([T, 27, 20, 12]):  # padding at the end
        ids[b, length:], targets[b, length:], mask[b, length:] = 0, 0, 0
    return cfg, params, ids, targets, mask


def numpy_run(cfg, params, ids, targets, mask):
    params = {k: v.copy() for k, v in params.items()}
    optimizer = AdamW(beta1=BETAS[0], beta2=BETAS[1], weight_decay=WEIGHT_DECAY)
    losses = []
    for step in range(STEPS):
        loss, grads = loss_and_grads(cfg, params, ids, targets, mask)
        assert all(g.dtype == np.float32 for g in grads.values())
        clip_grad_norm(grads, MAX_NORM)
        optimizer.step(params, grads, learning_rate(step, total=STEPS, peak=PEAK_LR, warmup=WARMUP))
        losses.append(loss)
    assert all(p.dtype == np.float32 for p in params.values())
    return losses, params


def torch_run(cfg, params, ids, targets, mask):
    t_params = torch_llama.to_torch(params)
    matrices = [p for p in t_params.values() if p.dim() >= 2]
    vectors = [p for p in t_params.values() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": WEIGHT_DECAY},
                                   {"params": vectors, "weight_decay": 0.0}],
                                  lr=PEAK_LR, betas=BETAS, eps=1e-8)
    cos, sin = (torch.from_numpy(a) for a in rope_angles(np.arange(ids.shape[1]),
                                                           rope_frequencies(cfg.head_dim, cfg.rope_base)))
    ids, targets, mask = torch.from_numpy(ids), torch.from_numpy(targets), torch.from_numpy(mask)
    losses = []
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        optimizer.zero_grad()
        loss = torch_llama.loss(cfg, t_params, ids, targets, mask, cos, sin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(t_params.values(), MAX_NORM)
        optimizer.step()
        losses.append(loss.item())
    return losses, {k: v.detach().numpy() for k, v in t_params.items()}


def test_schedule_formula_agrees():
    for step in range(STEPS):
        assert abs(learning_rate(step, total=STEPS, peak=PEAK_LR, warmup=WARMUP) - schedule(step)) < 1e-15


def test_ten_steps_match_torch(setup):
    losses, params = numpy_run(*setup)
    t_losses, t_params = torch_run(*setup)
    np.testing.assert_allclose(losses, t_losses, rtol=0, atol=LOSS_TOLERANCE)
    assert abs(losses[0] - math.log(setup[0].vocab_size)) < 0.25  # the init predicts about uniformly
    assert losses[-1] < 0.7 * losses[0]  # memorising one batch: the loss falls substantially
    assert set(params) == set(t_params)
    for name in params:
        np.testing.assert_allclose(params[name], t_params[name], rtol=0, atol=1e-3, err_msg=name)
