"""Matrix products by the fastest route this numpy has: the inference engine and the trainer share them.

Pyodide's numpy has no BLAS: there `@` is a naive loop that strides through the right operand, and einsum
over contiguous operands is faster. Measured in Pyodide 0.27.7 (numpy 2.0.2): a one-token product
x [1, 576] @ W [1536, 576].T runs at 1.4 GFLOP/s with `@` and 4.3 with einsum, a 128-token prompt's
2.3 against 3.5; training shapes gain 1.3-7x (e.g. [512, 128] @ [128, 4096] 206 ms against 1446 ms).
Natively BLAS `@` is 5x faster than einsum, so there `@` stays.

    >>> a, w = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(4, 3)
    >>> bool((matmul_transposed(a, w) == a @ w.T).all()), bool((matmul(a, w.T) == a @ w.T).all())
    (True, True)
"""
from __future__ import annotations

import sys

import numpy as np

NO_BLAS = sys.platform == "emscripten"
# einsum iterates over all N * K * M index triples at once; wasm32's 32-bit sizes refuse 2^31 or more
# ("ValueError: iterator is too large", e.g. 139 positions x 576 x SmolLM2's 49152-token head).
EINSUM_MAX_ITERATIONS = 2 ** 30


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [N, K] @ b [K, M]."""
    if NO_BLAS:
        return einsum_matmul(a, b, EINSUM_MAX_ITERATIONS)
    return a @ b


def matmul_transposed(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [N, K] @ w [M, K].T: a layer's product with its weight matrix, whose rows stay contiguous."""
    if NO_BLAS:
        return einsum_matmul(x, w, EINSUM_MAX_ITERATIONS, b_transposed=True)
    return x @ w.T


def einsum_matmul(a: np.ndarray, b: np.ndarray, max_iterations: int, b_transposed: bool = False) -> np.ndarray:
    """a [N, K] @ b [K, M] (or @ b.T for b [M, K] when `b_transposed`) with einsum, in blocks of rows and
    columns of at most `max_iterations` triples."""
    (n, k), m = a.shape, b.shape[0 if b_transposed else 1]
    spec = "nk,mk->nm" if b_transposed else "nk,km->nm"
    cols = min(m, max(1, max_iterations // k))
    rows = min(n, max(1, max_iterations // (k * cols)))
    a = np.ascontiguousarray(a)
    if rows == n and cols == m:
        return np.einsum(spec, a, np.ascontiguousarray(b))
    out = np.empty((n, m), np.result_type(a, b))
    for j in range(0, m, cols):
        block = np.ascontiguousarray(b[j:j + cols] if b_transposed else b[:, j:j + cols])  # [cols, K] or [K, cols]
        for i in range(0, n, rows):
            out[i:i + rows, j:j + cols] = np.einsum(spec, a[i:i + rows], block)
    return out
