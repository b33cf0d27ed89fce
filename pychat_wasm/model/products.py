"""Matrix products by the fastest route this numpy has: the inference engine and the trainer share them.

Pyodide's numpy has no BLAS: there `@` is a naive loop that strides through the right operand, and einsum
over contiguous operands is faster. Measured in Pyodide 0.27.7 (numpy 2.0.2): a one-token product
x [1, 576] @ W [1536, 576].T runs at 1.4 GFLOP/s with `@` and 4.3 with einsum, a 128-token prompt's
2.3 against 3.5; training shapes gain 1.3-7x (e.g. [512, 128] @ [128, 4096] 206 ms against 1446 ms).
Natively BLAS `@` is 5x faster than einsum, so there `@` stays, but for 2..FEW_ROWS rows (the check of a
speculative draft, chat/speculative.py) it goes band by band through the weight matrix: OpenBLAS's general
product copies ("packs") all of the right operand before it multiplies, which for a handful of rows costs 3-5x
the one-row product that only streams it (SmolLM2's head, [49152, 576]: 1 row 14 ms, 2 rows 65 ms, 8 rows
70 ms; band by band 14, 24 ms), while a band of BAND_BYTES is packed from the core's cache.

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
FEW_ROWS = 8  # native products of 2..FEW_ROWS rows go band by band; from 16 rows on BLAS's own blocking wins
BAND_BYTES = 256 << 10  # weight bytes per band of such a product: packed while they are in the core's cache


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [N, K] @ b [K, M]."""
    if NO_BLAS:
        return einsum_matmul(a, b, EINSUM_MAX_ITERATIONS)
    return a @ b


def matmul_transposed(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [N, K] @ w [M, K].T: a layer's product with its weight matrix, whose rows stay contiguous."""
    if NO_BLAS:
        return einsum_matmul(x, w, EINSUM_MAX_ITERATIONS, b_transposed=True)
    if 1 < x.shape[0] <= FEW_ROWS:
        return banded_matmul_transposed(x, w, BAND_BYTES)
    return x @ w.T


def banded_matmul_transposed(x: np.ndarray, w: np.ndarray, band_bytes: int) -> np.ndarray:
    """x [N, K] @ w [M, K].T, one band of about `band_bytes` of w's rows at a time.

    >>> x, w = np.ones((2, 3), np.float32), np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> banded_matmul_transposed(x, w, band_bytes=24).tolist()     # two rows of w per band
    [[3.0, 12.0, 21.0, 30.0], [3.0, 12.0, 21.0, 30.0]]
    """
    out = np.empty((x.shape[0], w.shape[0]), np.result_type(x, w))  # [N, M]
    rows = max(1, band_bytes // (w.itemsize * w.shape[1]))
    for start in range(0, w.shape[0], rows):
        np.matmul(x, w[start:start + rows].T, out=out[:, start:start + rows])  # [N, K] @ [K, rows]
    return out


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
