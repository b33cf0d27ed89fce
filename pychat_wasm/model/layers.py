"""The building blocks of the transformer: small numpy functions the forward pass (forward.py) is made of.

Each takes and returns float32 arrays whose last axis is the feature axis, so the same code runs for a
whole prompt [n_tokens, ...] and for one decoded token [1, ...].

    >>> x = np.ones((2, 4), np.float32)                              # [n_tokens, dim]
    >>> rms_norm(x, np.full(4, 2.0, np.float32), 1e-6).round(3)
    array([[2., 2., 2., 2.],
           [2., 2., 2., 2.]], dtype=float32)
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .matrices import Matrix


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """Scale each vector (last axis) to unit root-mean-square, then by weight.

    >>> rms_norm(np.array([[3.0, 4.0]]), np.ones(2), 0.0).round(4)
    array([[0.8485, 1.1314]])
    """
    mean_square = np.add.reduce(x * x, axis=-1, keepdims=True) / x.shape[-1]  # np.mean's sum, without its Python
    return x / np.sqrt(mean_square + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))  # x * sigmoid(x), without exp overflow


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))  # sqrt(2/pi)


ACTIVATIONS = {"silu": silu, "gelu_tanh": gelu_tanh}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def linear(x: np.ndarray, matrix: Matrix, bias: Optional[np.ndarray]) -> np.ndarray:
    y = matrix.matmul(x)  # [n, in] -> [n, out]
    return y if bias is None else y + bias


def rope_frequencies(head_dim: int, base: float, factors: Optional[np.ndarray] = None) -> np.ndarray:
    """base^(-2i/head_dim) / factor_i [head_dim/2] in float32 like transformers: computed once per model.

    `factors` are Llama 3.1+'s rope_freqs.weight (llama3 RoPE scaling), applied as llama.cpp does.

    >>> rope_frequencies(4, 10000.0).tolist()
    [1.0, 0.009999999776482582]
    """
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)  # [head_dim/2]
    return inv_freq if factors is None else inv_freq / factors


def rope_angles(positions: np.ndarray, inv_freq: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """cos and sin [n, head_dim/2] of position * inv_freq (see rope_frequencies)."""
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # [n, head_dim/2]
    return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, style: str) -> np.ndarray:
    """Rotate each pair of dimensions of every head [..., n, heads, head_dim] by its position's angle.

    cos and sin [n, head_dim/2] from rope_angles; x keeps its dtype (float64 in the trainer's gradient
    checks). "neox" pairs dimension i with i + head_dim/2, "interleaved" 2i with 2i + 1. The trainer's
    backward pass rotates by the opposite angle (sin -> -sin).

    >>> x = np.array([[[1.0, 2.0, 3.0, 4.0]]])                          # [n=1, heads=1, head_dim=4]
    >>> cos, sin = np.zeros((1, 2)), np.ones((1, 2))                    # a quarter turn
    >>> apply_rope(x, cos, sin, "interleaved").ravel().tolist(), apply_rope(x, cos, sin, "neox").ravel().tolist()
    ([-2.0, 1.0, -4.0, 3.0], [-3.0, -4.0, 1.0, 2.0])
    """
    half = x.shape[-1] // 2
    if style == "neox":
        first, second = np.s_[..., :half], np.s_[..., half:]  # dimension i pairs with i + head_dim/2
    else:
        first, second = np.s_[..., 0::2], np.s_[..., 1::2]  # dimension 2i pairs with 2i + 1
    cos = cos[:, None, :].astype(x.dtype, copy=False)  # [n, 1, head_dim/2], broadcast over heads
    sin = sin[:, None, :].astype(x.dtype, copy=False)
    out = np.empty_like(x)
    out[first] = x[first] * cos - x[second] * sin
    out[second] = x[second] * cos + x[first] * sin
    return out


def attention_mask(start_pos: int, n_tokens: int, window: int) -> Tuple[int, np.ndarray]:
    """The cached positions that new tokens may see: (first position, additive mask [n_tokens, end - first]).

    Causal, and within `window` positions when window > 0:
    >>> attention_mask(1, 2, 0)[1]
    array([[  0.,   0., -inf],
           [  0.,   0.,   0.]], dtype=float32)
    """
    end = start_pos + n_tokens
    first = max(0, start_pos - window + 1) if window else 0  # older keys are outside every query's window
    query_pos = np.arange(start_pos, end)[:, None]
    key_pos = np.arange(first, end)[None, :]
    visible = key_pos <= query_pos
    if window:
        visible &= query_pos - key_pos < window
    return first, np.where(visible, 0.0, -np.inf).astype(np.float32)
