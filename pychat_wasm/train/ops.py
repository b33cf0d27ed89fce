"""The operations of the trainable transformer, each forward pass with its backward pass next to it.

In llm.c's style: `op_forward(...)` returns its output and a cache of what the backward pass needs;
`op_backward(d_out, cache)` returns the gradients of the op's inputs (and weights). The arrays keep the
dtype they come in: float32 for training, float64 for the gradient checks against torch autograd.

Shapes: B sequences of T positions, D model width, H query heads and Hkv key/value heads of width hd,
F FFN width, V vocabulary.

    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4))         # [B, T, D]
    >>> y, cache = rms_norm_forward(x, np.ones(4), 1e-5)
    >>> dx, dw = rms_norm_backward(np.ones_like(y), cache)
    >>> dx.shape, dw.shape
    ((2, 3, 4), (4,))
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ..model.layers import apply_rope
from ..model.products import matmul, matmul_transposed

Cache = Tuple[Any, ...]

# ----------------------------------------------------------------------------------------------
# Embedding


def embedding_forward(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return table[ids]  # [V, D][B, T] -> [B, T, D]


def embedding_backward(d_out: np.ndarray, ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Scatter-add each position's gradient into its token's row."""
    d_table = np.zeros((vocab_size, d_out.shape[-1]), d_out.dtype)  # [V, D]
    np.add.at(d_table, ids.reshape(-1), d_out.reshape(-1, d_out.shape[-1]))
    return d_table


# ----------------------------------------------------------------------------------------------
# RMSNorm: y = x / rms(x) * w


def rms_norm_forward(x: np.ndarray, weight: np.ndarray, eps: float) -> Tuple[np.ndarray, Cache]:
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # [..., 1]
    x_hat = x * inv_rms.astype(x.dtype)  # [..., D]
    return x_hat * weight, (x_hat, inv_rms.astype(x.dtype), weight)


def rms_norm_backward(d_y: np.ndarray, cache: Cache) -> Tuple[np.ndarray, np.ndarray]:
    x_hat, inv_rms, weight = cache
    d_weight = (d_y * x_hat).reshape(-1, x_hat.shape[-1]).sum(axis=0)  # [D]
    d_x_hat = d_y * weight  # [..., D]
    # x_hat = x * inv_rms and inv_rms depends on x: remove the part of d_x_hat along x_hat.
    d_x = inv_rms * (d_x_hat - x_hat * np.mean(d_x_hat * x_hat, axis=-1, keepdims=True))
    return d_x, d_weight


# ----------------------------------------------------------------------------------------------
# Linear: y = x W^T + b, W [out, in] as GGUF stores it


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray] = None) -> np.ndarray:
    y = matmul_transposed(x.reshape(-1, x.shape[-1]), weight).reshape(x.shape[:-1] + (-1,))  # [..., in] -> [..., out]
    return y if bias is None else y + bias


def linear_backward(d_y: np.ndarray, x: np.ndarray, weight: np.ndarray, need_weight_grad: bool = True,
                    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(d_x, d_weight); d_weight is None for a frozen weight (saves the larger half of the work)."""
    d_y2 = d_y.reshape(-1, d_y.shape[-1])  # [N, out]
    d_x = matmul(d_y2, weight).reshape(x.shape)  # [N, out] -> [..., in]
    if not need_weight_grad:
        return d_x, None
    d_weight = matmul(d_y2.T, x.reshape(-1, x.shape[-1]))  # [out, in]
    return d_x, d_weight


def bias_backward(d_y: np.ndarray) -> np.ndarray:
    return d_y.reshape(-1, d_y.shape[-1]).sum(axis=0)  # [out]


# ----------------------------------------------------------------------------------------------
# LoRA: a low-rank update scale * x A^T B^T beside a (frozen) linear layer


def lora_forward(x: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """x [..., in], a [r, in], b [out, r] -> [..., out]. Each product keeps a long dimension innermost (r is
    small): einsum, Pyodide's product (model/products.py), iterates it in its inner loop."""
    low = matmul_transposed(x.reshape(-1, x.shape[-1]), a)  # [N, in] -> [N, r]
    y = matmul(low, np.ascontiguousarray(b.T)) * x.dtype.type(scale)  # [N, r] -> [N, out]
    return y.reshape(x.shape[:-1] + (-1,))


def lora_backward(d_y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float,
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d_x, d_a, d_b) of lora_forward."""
    d_y2, x2 = d_y.reshape(-1, d_y.shape[-1]), x.reshape(-1, x.shape[-1])  # [N, out], [N, in]
    scale = x.dtype.type(scale)
    d_low = matmul_transposed(d_y2, np.ascontiguousarray(b.T)) * scale  # [N, out] -> [N, r]
    low = matmul_transposed(x2, a)  # [N, r]
    d_b = matmul_transposed(np.ascontiguousarray(d_y2.T), np.ascontiguousarray(low.T)) * scale  # [out, r]
    d_a = matmul(d_low.T, x2)  # [r, N] @ [N, in]
    return matmul(d_low, a).reshape(x.shape), d_a, d_b  # d_x [..., in]


# ----------------------------------------------------------------------------------------------
# RoPE: the inference model's rotation (layers.apply_rope); its backward is the opposite rotation


def rope_backward(d_out: np.ndarray, cos: np.ndarray, sin: np.ndarray, style: str) -> np.ndarray:
    """A rotation's transpose is the rotation by the opposite angle."""
    return apply_rope(d_out, cos, -sin, style)


# ----------------------------------------------------------------------------------------------
# Causal grouped-query attention


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: Optional[np.ndarray] = None,
                      ) -> Tuple[np.ndarray, Cache]:
    """softmax(q k^T / sqrt(hd) + mask) v, each kv head shared by a group of query heads.

    q [B, T, H, hd], k and v [B, T, Hkv, hd] -> [B, T, H * hd]. The mask is causal, or `bias` [T, T] (0 where
    position i sees position j, -inf elsewhere: a packed batch's, batches.py). Sequences are padded at the end,
    so the causal mask alone keeps padding out of every real position's view (the loss mask drops the rest).
    """
    B, T, H, hd = q.shape
    n_kv = k.shape[2]
    group = H // n_kv
    # Query head h reads kv head h // group: [B, Hkv, group, T, hd] against [B, Hkv, 1, T, hd].
    qg = np.ascontiguousarray(q.reshape(B, T, n_kv, group, hd).transpose(0, 2, 3, 1, 4))
    kg = np.ascontiguousarray(k.transpose(0, 2, 1, 3))[:, :, None]  # [B, Hkv, 1, T, hd]
    vg = np.ascontiguousarray(v.transpose(0, 2, 1, 3))[:, :, None]
    scale = hd ** -0.5
    scores = (qg @ kg.swapaxes(-1, -2)) * scale  # [B, Hkv, group, T, T]
    scores += np.triu(np.full((T, T), -np.inf, q.dtype), k=1) if bias is None else bias  # t sees 0..t
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = probs @ vg  # [B, Hkv, group, T, hd]
    out = out.transpose(0, 3, 1, 2, 4).reshape(B, T, H * hd)
    return out, (qg, kg, vg, probs, scale)


def attention_backward(d_out: np.ndarray, cache: Cache) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    qg, kg, vg, probs, scale = cache
    B, n_kv, group, T, hd = qg.shape
    d_outg = np.ascontiguousarray(d_out.reshape(B, T, n_kv, group, hd).transpose(0, 2, 3, 1, 4))
    d_v = (probs.swapaxes(-1, -2) @ d_outg).sum(axis=2)  # [B, Hkv, T, hd]: summed over the group
    d_probs = d_outg @ vg.swapaxes(-1, -2)  # [B, Hkv, group, T, T]
    d_scores = probs * (d_probs - (d_probs * probs).sum(axis=-1, keepdims=True)) * scale  # softmax'
    d_q = d_scores @ kg  # [B, Hkv, group, T, hd]
    d_k = (d_scores.swapaxes(-1, -2) @ qg).sum(axis=2)  # [B, Hkv, T, hd]
    d_q = d_q.transpose(0, 3, 1, 2, 4).reshape(B, T, n_kv * group, hd)
    return d_q, d_k.transpose(0, 2, 1, 3), d_v.transpose(0, 2, 1, 3)


# ----------------------------------------------------------------------------------------------
# SwiGLU: silu(gate) * up


def swiglu_forward(gate: np.ndarray, up: np.ndarray) -> Tuple[np.ndarray, Cache]:
    sig = 0.5 * (1.0 + np.tanh(0.5 * gate))  # sigmoid(gate), without exp overflow
    silu = gate * sig
    return silu * up, (gate, up, sig, silu)


def swiglu_backward(d_out: np.ndarray, cache: Cache) -> Tuple[np.ndarray, np.ndarray]:
    gate, up, sig, silu = cache
    d_silu = sig * (1.0 + gate * (1.0 - sig))  # d/dg of g * sigmoid(g)
    return d_out * up * d_silu, d_out * silu


# ----------------------------------------------------------------------------------------------
# Cross-entropy over the positions the loss mask keeps


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray,
                          ) -> Tuple[float, Cache]:
    """Mean negative log-likelihood of `targets` [B, T] over positions where loss_mask [B, T] is 1.

    Returns (loss, cache); loss is 0.0 when the mask keeps nothing.
    """
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # [B*T, V]
    shifted = flat - flat.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=-1))  # [B*T]
    rows = np.arange(flat.shape[0])
    nll = log_z - shifted[rows, targets.reshape(-1)]  # [B*T]
    weights = loss_mask.reshape(-1).astype(logits.dtype)
    count = max(float(weights.sum()), 1.0)
    loss = float((nll * weights).sum() / count)
    return loss, (shifted, log_z, targets.reshape(-1), weights / count, logits.shape)


def cross_entropy_backward(cache: Cache) -> np.ndarray:
    """d loss / d logits [B, T, V]: (softmax - one_hot) scaled by each position's weight."""
    shifted, log_z, targets, weights, shape = cache
    d_logits = np.exp(shifted - log_z[:, None])  # softmax [B*T, V]
    d_logits[np.arange(len(targets)), targets] -= 1.0
    d_logits *= weights[:, None].astype(d_logits.dtype)
    return d_logits.reshape(shape)
