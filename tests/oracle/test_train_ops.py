"""Every op of pychat_wasm/train/ops.py against torch: the forward pass equals torch's, and the hand-written
backward pass equals torch autograd's vector-Jacobian product for a random upstream gradient, on random
float64 inputs, to a relative error (max|a - b| / max|b|) below 1e-8.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from pychat_wasm.model.layers import apply_rope, rope_angles, rope_frequencies
from pychat_wasm.train import ops

import torch_llama  # tests/support/torch_llama.py

F = torch.nn.functional
torch.set_num_threads(1)

TOL = 1e-8
B, T, D = 2, 5, 8


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b.detach().numpy() if torch.is_tensor(b) else b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.abs(b).max()
    diff = np.abs(a - b).max()
    return diff / scale if scale > 0 else diff


def assert_close(a, b):
    assert rel_err(a, b) < TOL


@pytest.fixture
def rng(request):
    """A generator seeded by the test's name: each case has its own inputs, the same on every run."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def leaf(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def vjp(y, inputs, d_y):
    """torch autograd: d<y, d_y>/d inputs."""
    return torch.autograd.grad(y, inputs, torch.from_numpy(d_y))


def test_embedding(rng):
    V = 7
    table = rng.standard_normal((V, D))
    ids = np.array([[1, 3, 3, 0, 6], [3, 1, 1, 1, 2]])  # repeated ids: their gradients add up
    t_table = leaf(table)
    y_ref = F.embedding(torch.from_numpy(ids), t_table)
    y = ops.embedding_forward(table, ids)
    assert_close(y, y_ref)
    d_y = rng.standard_normal(y.shape)
    (d_table_ref,) = vjp(y_ref, [t_table], d_y)
    assert_close(ops.embedding_backward(d_y, ids, V), d_table_ref)


def test_rms_norm(rng):
    x, w = rng.standard_normal((B, T, D)) * 3.0, 1.0 + 0.3 * rng.standard_normal(D)
    eps = 1e-5
    tx, tw = leaf(x), leaf(w)
    y_ref = F.rms_norm(tx, (D,), tw, eps)
    y, cache = ops.rms_norm_forward(x, w, eps)
    assert_close(y, y_ref)
    d_y = rng.standard_normal(y.shape)
    d_x_ref, d_w_ref = vjp(y_ref, [tx, tw], d_y)
    d_x, d_w = ops.rms_norm_backward(d_y, cache)
    assert_close(d_x, d_x_ref)
    assert_close(d_w, d_w_ref)


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("frozen", [False, True], ids=["trained", "frozen"])
def test_linear(rng, bias, frozen):
    n_out = 6
    x, w = rng.standard_normal((B, T, D)), rng.standard_normal((n_out, D))
    b = rng.standard_normal(n_out) if bias else None
    tx, tw = leaf(x), leaf(w)
    tb = leaf(b) if bias else None
    y_ref = F.linear(tx, tw, tb)
    y = ops.linear_forward(x, w, b)
    assert_close(y, y_ref)
    d_y = rng.standard_normal(y.shape)
    refs = vjp(y_ref, [tx, tw] + ([tb] if bias else []), d_y)
    d_x, d_w = ops.linear_backward(d_y, x, w, need_weight_grad=not frozen)
    assert_close(d_x, refs[0])
    if frozen:
        assert d_w is None
    else:
        assert_close(d_w, refs[1])
    if bias:
        assert_close(ops.bias_backward(d_y), refs[2])


@pytest.mark.parametrize("scale", [1.0, 0.75])
def test_lora(rng, scale):
    r, n_out = 3, 6
    x, a, b = rng.standard_normal((B, T, D)), rng.standard_normal((r, D)), rng.standard_normal((n_out, r))
    tx, ta, tb = leaf(x), leaf(a), leaf(b)
    y_ref = scale * (tx @ ta.T @ tb.T)
    y = ops.lora_forward(x, a, b, scale)
    assert_close(y, y_ref)
    d_y = rng.standard_normal(y.shape)
    refs = vjp(y_ref, [tx, ta, tb], d_y)
    for got, ref in zip(ops.lora_backward(d_y, x, a, b, scale), refs):
        assert_close(got, ref)


@pytest.mark.parametrize("style", ["interleaved", "neox"])
def test_rope(rng, style):
    heads, hd = 3, 8
    x = rng.standard_normal((B, T, heads, hd))
    cos, sin = rope_angles(np.arange(T), rope_frequencies(hd, 100.0))  # float32 tables, as the trainer's
    tx = leaf(x)
    y_ref = torch_llama.rope(tx, torch.from_numpy(cos), torch.from_numpy(sin), style)
    y = apply_rope(x, cos, sin, style)
    assert y.dtype == np.float64
    assert_close(y, y_ref)
    d_y = rng.standard_normal(y.shape)
    (d_x_ref,) = vjp(y_ref, [tx], d_y)
    assert_close(ops.rope_backward(d_y, cos, sin, style), d_x_ref)


def test_rope_styles_pair_the_documented_dimensions():
    """One position, angle pi/2 on pair 0 only: the two styles move different dimensions."""
    hd = 4
    cos, sin = np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])
    x = np.arange(1.0, hd + 1).reshape(1, 1, 1, hd)  # [1, 2, 3, 4]
    # interleaved: pair (0, 1) rotates by 90 degrees: (1, 2) -> (-2, 1)
    np.testing.assert_array_equal(apply_rope(x, cos, sin, "interleaved").ravel(), [-2, 1, 3, 4])
    # neox: pair (0, 2) rotates: (1, 3) -> (-3, 1)
    np.testing.assert_array_equal(apply_rope(x, cos, sin, "neox").ravel(), [-3, 2, 1, 4])
    for style in ("interleaved", "neox"):
        ref = torch_llama.rope(torch.from_numpy(x), torch.from_numpy(cos), torch.from_numpy(sin), style)
        np.testing.assert_array_equal(apply_rope(x, cos, sin, style), ref.numpy())


@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (8, 2), (4, 1)],
                         ids=["mha", "gqa_group2", "gqa_group4", "mqa_group4"])
def test_attention(rng, n_heads, n_kv_heads):
    hd, t = 4, 6
    q = 2.0 * rng.standard_normal((B, t, n_heads, hd))  # scaled up so the softmax is far from uniform
    k = 2.0 * rng.standard_normal((B, t, n_kv_heads, hd))
    v = rng.standard_normal((B, t, n_kv_heads, hd))
    tq, tk, tv = leaf(q), leaf(k), leaf(v)
    y_ref = torch_llama.attention(tq, tk, tv)
    y, cache = ops.attention_forward(q, k, v)
    assert y.shape == (B, t, n_heads * hd)
    assert_close(y, y_ref)
    d_y = rng.standard_normal(y.shape)
    refs = vjp(y_ref, [tq, tk, tv], d_y)
    for got, ref in zip(ops.attention_backward(d_y, cache), refs):
        assert_close(got, ref)


def test_attention_is_causal(rng):
    """Changing the last position's k and v leaves every earlier output unchanged."""
    q, k, v = (rng.standard_normal((1, 5, 2, 4)) for _ in range(3))
    y1, _ = ops.attention_forward(q, k, v)
    k2, v2 = k.copy(), v.copy()
    k2[:, -1], v2[:, -1] = 10.0, -10.0
    y2, _ = ops.attention_forward(q, k2, v2)
    np.testing.assert_array_equal(y1[:, :-1], y2[:, :-1])
    assert not np.allclose(y1[:, -1], y2[:, -1])


def test_swiglu(rng):
    gate, up = 3.0 * rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D))
    tg, tu = leaf(gate), leaf(up)
    y_ref = F.silu(tg) * tu
    y, cache = ops.swiglu_forward(gate, up)
    assert_close(y, y_ref)
    d_y = rng.standard_normal(y.shape)
    refs = vjp(y_ref, [tg, tu], d_y)
    for got, ref in zip(ops.swiglu_backward(d_y, cache), refs):
        assert_close(got, ref)


@pytest.mark.parametrize("mask_kind", ["full", "partial", "none"])
def test_cross_entropy(rng, mask_kind):
    V = 11
    logits = 3.0 * rng.standard_normal((B, T, V))
    targets = rng.integers(0, V, (B, T))
    mask = {"full": np.ones((B, T)),
            "partial": np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]], np.float64),
            "none": np.zeros((B, T))}[mask_kind]
    tl = leaf(logits)
    loss_ref = torch_llama.masked_cross_entropy(tl, torch.from_numpy(targets), torch.from_numpy(mask))
    loss, cache = ops.cross_entropy_forward(logits, targets, mask)
    assert isinstance(loss, float)
    assert_close(loss, loss_ref)
    (d_ref,) = torch.autograd.grad(loss_ref, [tl])
    d_logits = ops.cross_entropy_backward(cache)
    assert_close(d_logits, d_ref)
    if mask_kind == "none":
        assert loss == 0.0 and not d_logits.any()
    else:
        # Independently of torch: the mean over kept positions of -log softmax[target].
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
        assert abs(loss - (nll * mask).sum() / mask.sum()) < 1e-12
        assert not d_logits[mask == 0].any()  # masked positions get no gradient
