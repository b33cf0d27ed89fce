"""Weight storage policies: how the big matrices are held in memory and multiplied.

A policy trades memory for speed. Per matrix weight (SmolLM2-135M has 134.5M of them, including
the 49152 x 576 embedding that doubles as its output head):

    policy     held as                                        bytes/weight   speed
    float32    dequantized once, float32                      4              fastest
    int8       dequantized once, requantized to 8-bit codes   1.25           middle: codes -> float32
               with a float32 scale and offset per 32 weights                chunk by chunk per product
    quantized  the GGUF bytes as they are, rows dequantized   the file's     slowest: dequantizes every
               chunk by chunk at every product                (~0.6 for Q4)  weight at every token

Every matrix, whatever its policy, answers the same two questions:

    >>> w.matmul(x)              # x [n, in] -> x @ W.T [n, out]  # doctest: +SKIP
    >>> w.dequantize_rows(0, 2)  # -> float32 [2, in]  # doctest: +SKIP

`estimate_bytes` sizes a policy before anything is built; load_plan.py chooses the policy of a load from
those figures (fit_check.py).
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence, Tuple, Union

import numpy as np

from ..gguf import quants
from .products import matmul_transposed
from ..errors import InvalidSettingError
from ..gguf.ggml_types import TYPES_BY_NAME, row_nbytes

POLICIES = ("float32", "int8", "quantized")  # fastest first
INT8_BLOCK = 32  # weights sharing one int8 scale
# Weights in one band of rows of a compressed matrix decoded at a time (for a product, or to store it under
# another policy): bounds that temporary float32 buffer to 4 MB. quants.WEIGHTS_PER_DECODE_STEP splits the
# decoding of one band further.
WEIGHTS_PER_ROW_BAND = 1 << 20


def row_bands(n_rows: int, n_cols: int) -> Iterator[Tuple[int, int]]:
    """(start, stop) of consecutive row bands of about WEIGHTS_PER_ROW_BAND weights each (at least one row).

    >>> list(row_bands(5, WEIGHTS_PER_ROW_BAND // 2))
    [(0, 2), (2, 4), (4, 5)]
    """
    step = max(1, WEIGHTS_PER_ROW_BAND // n_cols)
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def chunked_matmul(x: np.ndarray, shape: Tuple[int, int], rows: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """x @ W.T for a matrix W [out, in] stored compressed: decode a band of rows with `rows(start, stop)`,
    multiply, repeat."""
    out = np.empty((x.shape[0], shape[0]), dtype=np.float32)  # [n, out]
    for start, stop in row_bands(*shape):
        out[:, start:stop] = matmul_transposed(x, rows(start, stop))  # [n, in] @ [in, stop-start]
    return out


class QuantizedMatrix:
    """A GGUF tensor left as it is in the file; rows are dequantized when needed."""

    def __init__(self, raw: np.ndarray, type_id: int, shape: Sequence[int]):
        self.raw, self.type_id = raw, type_id  # raw: uint8 view into the file
        self.shape = (int(shape[0]), int(shape[1]))
        self.row_bytes = row_nbytes(type_id, self.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)

    def dequantize_rows(self, start: int, stop: int) -> np.ndarray:
        return quants.dequantize_rows(self.raw, self.type_id, self.shape[1], start, stop)  # [stop-start, in]

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        """Dequantize only the rows `ids` (an embedding lookup): rows([5, 5, 9]) -> [3, in]."""
        picked = self.raw.reshape(self.shape[0], self.row_bytes)[np.asarray(ids, dtype=np.int64)]
        return quants.dequantize(picked.reshape(-1), self.type_id, (len(ids), self.shape[1]))

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return chunked_matmul(x, self.shape, self.dequantize_rows)


class Int8Matrix:
    """8-bit codes with a float32 scale and offset per INT8_BLOCK consecutive weights of a row.

    A block's 256 levels span its own [min, max], on which the 16 levels of a Q4_1 block land
    exactly (codes 0, 17, 34, ...); Q8_0 blocks instead get steps of absmax/127 around zero, their
    own levels. Other types round to the nearest level: off by at most (max - min) / 510.
    """

    def __init__(self, codes: np.ndarray, scales: np.ndarray, offsets: np.ndarray):
        self.codes = codes  # uint8 [out, in]
        self.scales = scales  # float32 [out, in // block]
        self.offsets = offsets  # float32 [out, in // block]: weight = code * scale + offset
        self.shape = codes.shape
        self.block = codes.shape[1] // scales.shape[1]

    @classmethod
    def from_matrix(cls, source: "Matrix") -> "Int8Matrix":
        """Requantize band by band, so the float32 version never exists whole."""
        n_rows, n_cols = source.shape
        block = INT8_BLOCK if n_cols % INT8_BLOCK == 0 else n_cols
        codes = np.empty((n_rows, n_cols), dtype=np.uint8)
        scales = np.empty((n_rows, n_cols // block), dtype=np.float32)
        offsets = np.empty((n_rows, n_cols // block), dtype=np.float32)
        around_zero = getattr(source, "type_id", None) == TYPES_BY_NAME["Q8_0"].id
        for start, stop in row_bands(n_rows, n_cols):
            blocks = source.dequantize_rows(start, stop).reshape(stop - start, -1, block)  # [rows, n_blocks, block]
            band_codes, scales[start:stop], offsets[start:stop] = _fit_codes(blocks, around_zero)
            codes[start:stop] = band_codes.reshape(stop - start, n_cols)
        return cls(codes, scales, offsets)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes + self.offsets.nbytes)

    def scaled_codes(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of codes * scale: the weights without their block offsets."""
        blocks = self.codes[start:stop].reshape(stop - start, -1, self.block)  # [rows, n_blocks, block]
        return (blocks * self.scales[start:stop, :, None]).reshape(stop - start, self.shape[1])  # float32

    def dequantize_rows(self, start: int, stop: int) -> np.ndarray:
        offsets = np.repeat(self.offsets[start:stop], self.block, axis=1)  # [rows, in]
        return self.scaled_codes(start, stop) + offsets

    def matmul(self, x: np.ndarray) -> np.ndarray:
        # W = codes * scale + offset, so x @ W.T = x @ (codes * scale).T + (x summed per block) @ offsets.T:
        # the offsets cost one small product instead of an addition per weight.
        block_sums = x.reshape(x.shape[0], -1, self.block).sum(axis=2)  # [n, n_blocks]
        out = chunked_matmul(x, self.shape, self.scaled_codes)  # [n, out]
        out += matmul_transposed(block_sums, self.offsets)  # [n, n_blocks] @ [n_blocks, out]
        return out


def _fit_codes(blocks: np.ndarray, around_zero: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes [rows, n_blocks, block] and scale, offset [rows, n_blocks] of each block's 8-bit grid."""
    low, high = blocks.min(axis=2), blocks.max(axis=2)  # [rows, n_blocks]
    if around_zero:  # steps of absmax/127 around zero: Q8_0's own levels
        scale = np.maximum(-low, high) / np.float32(127)
        offset = np.float32(-128) * scale
    else:  # 255 steps from min to max: Q4_1's 16 levels land on codes 0, 17, 34, ... 255
        scale = (high - low) / np.float32(255)
        offset = low
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    codes = np.rint((blocks - offset[:, :, None]) * inverse[:, :, None])  # 0..255 up to rounding
    return codes.astype(np.uint8), scale, offset


class Float32Matrix:
    """Plain float32 weights [out, in]: one BLAS call per product."""

    def __init__(self, weights: np.ndarray):
        self.weights = weights
        self.shape = weights.shape

    @classmethod
    def from_matrix(cls, source: "Matrix") -> "Float32Matrix":
        if isinstance(source, QuantizedMatrix):  # a whole GGUF tensor: decoded in place, no band copied
            return cls(quants.dequantize(source.raw, source.type_id, source.shape))  # [out, in]
        n_rows, n_cols = source.shape
        weights = np.empty((n_rows, n_cols), dtype=np.float32)
        for start, stop in row_bands(n_rows, n_cols):
            weights[start:stop] = source.dequantize_rows(start, stop)
        return cls(weights)

    @property
    def nbytes(self) -> int:
        return int(self.weights.nbytes)

    def dequantize_rows(self, start: int, stop: int) -> np.ndarray:
        return self.weights[start:stop]

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return matmul_transposed(x, self.weights)  # [n, in] @ [in, out]


Matrix = Union[QuantizedMatrix, Int8Matrix, Float32Matrix]


def store_matrix(source: QuantizedMatrix, policy: str) -> Matrix:
    """The matrix as `policy` keeps it."""
    if policy == "float32":
        return Float32Matrix.from_matrix(source)
    if policy == "int8":
        return Int8Matrix.from_matrix(source)
    if policy == "quantized":
        return source
    raise InvalidSettingError("unknown weight policy %r: choose one of auto, %s" % (policy, ", ".join(POLICIES)))


def estimate_bytes(matrices: Iterable[QuantizedMatrix], policy: str) -> int:
    """Bytes that `policy` would hold for these matrices, before building anything."""
    total = 0
    for m in matrices:
        n_weights = m.shape[0] * m.shape[1]
        if policy == "float32":
            total += 4 * n_weights
        elif policy == "int8":
            block = INT8_BLOCK if m.shape[1] % INT8_BLOCK == 0 else m.shape[1]
            total += n_weights + 8 * (n_weights // block)
        else:
            total += m.nbytes
    return total
