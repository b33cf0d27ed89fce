"""Fewer, larger products per layer: q, k and v as one matrix, gate and up as one.

Each layer multiplies its normed input by wq, wk and wv, and the FFN's normed input by w_gate and w_up.
Stacked row by row, those five products become two, so a token runs 4 products per layer instead of 7
(qkv, o, gate_up, down), each a wider output for one BLAS call, with fewer Python steps around them:

    qkv      [(n_heads + 2 * n_kv_heads) * head_dim, dim]    x [n, dim] -> q | k | v   [n, ...]
    gate_up  [2 * ffn_dim, dim]                              x [n, dim] -> gate | up   [n, ffn_dim] each

The stacked matrix is built once at load and the separate ones become views of its rows, so memory does not
grow. Stacking needs matrices the engine holds itself: the float32 and int8 policies (matrices.py). The
quantized policy keeps the file's bytes, where the tensors are not adjacent, so stacking would copy what
that policy exists not to copy: its layers stay unstacked. A worker of a split model (tensor_parallel.py)
stacks the rows of q, k, v and of gate and up that it holds: in Pyodide 3 fewer einsum calls per layer. A
layer whose q, k or v (gate or up) carries a LoRA adapter (lora.py) multiplies them separately.

    >>> from .matrices import Float32Matrix
    >>> a, b = Float32Matrix(np.ones((2, 3), np.float32)), Float32Matrix(np.zeros((1, 3), np.float32))
    >>> stacked, (a2, b2) = stack_rows([a, b])
    >>> stacked.shape, a2.weights.base is stacked.weights
    ((3, 3), True)
"""
from __future__ import annotations

from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .layers import linear
from .matrices import Float32Matrix, Int8Matrix, Matrix
from .weights import LayerWeights

QKV_FIELDS, GATE_UP_FIELDS = ("wq", "wk", "wv"), ("w_gate", "w_up")


class StackedLayer(NamedTuple):
    """A layer's stacked matrices (None: that group is multiplied separately)."""
    qkv: Optional[Matrix] = None  # [(n_heads + 2 * n_kv_heads) * head_dim, dim]
    gate_up: Optional[Matrix] = None  # [2 * ffn_dim, dim]


def stack_rows(parts: Sequence[Matrix]) -> Optional[Tuple[Matrix, List[Matrix]]]:
    """One matrix holding the rows of `parts` in order, and the parts again as views of its rows; None when
    they cannot be stacked (not all float32, or not all int8 with the same block)."""
    bounds = np.cumsum([0] + [p.shape[0] for p in parts])  # where each part's rows start in the stack
    spans = list(zip(bounds[:-1], bounds[1:]))
    if all(isinstance(p, Float32Matrix) for p in parts):
        weights = np.concatenate([p.weights for p in parts])  # [sum of rows, in]
        return Float32Matrix(weights), [Float32Matrix(weights[a:b]) for a, b in spans]
    if all(isinstance(p, Int8Matrix) for p in parts) and len({p.block for p in parts}) == 1:
        arrays = [np.concatenate([getattr(p, name) for p in parts]) for name in ("codes", "scales", "offsets")]
        return Int8Matrix(*arrays), [Int8Matrix(*(x[a:b] for x in arrays)) for a, b in spans]
    return None


def stack_layer(w: LayerWeights) -> Tuple[LayerWeights, StackedLayer]:
    """The layer with q/k/v and gate/up as views of their stacked matrices, and those matrices."""
    stacked = {}
    for group, fields in (("qkv", QKV_FIELDS), ("gate_up", GATE_UP_FIELDS)):
        result = stack_rows([getattr(w, f) for f in fields])
        if result is not None:
            stacked[group], views = result
            w = w._replace(**dict(zip(fields, views)))
    return w, StackedLayer(**stacked)


def without_adapted(stacked: StackedLayer, adapted: Iterable[str]) -> StackedLayer:
    """`stacked` without the groups one of whose matrices (LayerWeights field names) carries an adapter."""
    adapted = set(adapted)
    return StackedLayer(qkv=None if adapted & set(QKV_FIELDS) else stacked.qkv,
                        gate_up=None if adapted & set(GATE_UP_FIELDS) else stacked.gate_up)


def qkv_products(x: np.ndarray, w: LayerWeights, stacked: StackedLayer
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q [n, q_rows], k and v [n, kv_rows] of x [n, dim], biases added: one product when stacked."""
    if stacked.qkv is None:
        return linear(x, w.wq, w.q_bias), linear(x, w.wk, w.k_bias), linear(x, w.wv, w.v_bias)
    q_rows, kv_rows = w.wq.shape[0], w.wk.shape[0]
    qkv = stacked.qkv.matmul(x)  # [n, q_rows + 2 * kv_rows]
    parts = (qkv[:, :q_rows], qkv[:, q_rows:q_rows + kv_rows], qkv[:, q_rows + kv_rows:])
    return tuple(p if b is None else p + b for p, b in zip(parts, (w.q_bias, w.k_bias, w.v_bias)))


def gate_up_products(x: np.ndarray, w: LayerWeights, stacked: StackedLayer) -> Tuple[np.ndarray, np.ndarray]:
    """gate and up [n, ffn_dim] of x [n, dim]: one product when stacked."""
    if stacked.gate_up is None:
        return w.w_gate.matmul(x), w.w_up.matmul(x)
    both = stacked.gate_up.matmul(x)  # [n, 2 * ffn_dim]
    ffn_dim = w.w_gate.shape[0]
    return both[:, :ffn_dim], both[:, ffn_dim:]
