"""Encode float32 weights as ggml F32, F16 or Q8_0 bytes, bit-exact with ggml's reference code.

Every encoder takes a finite float32 array [..., n] (rows of n weights) and returns its bytes as
uint8 [..., bytes per row]. F16 is IEEE half precision, rounded to nearest even. Q8_0 packs each
32 consecutive weights of a row into one block (the layout of quants_legacy.Q8_0):

    byte  0        2                  34
         | d: f16 | qs[32]: int8 w[i] |       d = max|x| / 127,   w[i] = roundf(x[i] / d)

as quantize_row_q8_0_ref in ggml-quants.c does it: max|x|, d and 1/d in float32, x[i] * (1/d)
rounded half away from zero, d stored as the nearest fp16. An all-zero block is d = 0, w = 0.

    >>> quantize_f16(np.array([1.0, -2.0], np.float32)).tolist()
    [0, 60, 0, 192]
    >>> block = quantize_q8_0(np.arange(32, dtype=np.float32) - 16)      # [34]: one block
    >>> block[:2].view(np.float16).tolist(), block[2:].view(np.int8)[:4].tolist()
    ([0.1259765625], [-127, -119, -111, -103])
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np

from ..errors import GGUFWriteError
from .quants_legacy import Q8_0

Q8_0_WEIGHTS = Q8_0.block["qs"].shape[0]  # 32 weights per block
CHUNK_BLOCKS = 1 << 13  # blocks quantized per step: temporaries stay about a megabyte each


def require_finite_float32(x: Any) -> None:
    """GGUFWriteError unless `x` is a non-empty float32 numpy array of 1 or more dimensions, all finite."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        found = "%s array" % x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise GGUFWriteError("weights must be a float32 numpy array, got a %s: convert them with "
                             "np.asarray(x, np.float32)" % found)
    if x.ndim == 0 or x.size == 0:
        raise GGUFWriteError("weights must hold at least one row, got shape %s" % (x.shape,))
    if not (np.isfinite(x.min()) and np.isfinite(x.max())):  # NaN propagates through min/max
        raise GGUFWriteError("weights contain NaN or infinite values")


def encode_f32(x: np.ndarray) -> np.ndarray:
    """[..., n] float32 -> [..., 4n] uint8, little-endian; a view of `x` when it is already contiguous."""
    require_finite_float32(x)
    return np.ascontiguousarray(x, dtype="<f4").view(np.uint8)


def quantize_f16(x: np.ndarray) -> np.ndarray:
    """[..., n] float32 -> [..., 2n] uint8 of IEEE halves (round to nearest even), like ggml_fp32_to_fp16."""
    require_finite_float32(x)
    with np.errstate(over="ignore"):  # overflow to inf is detected just below
        halves = np.ascontiguousarray(x, dtype="<f2")
    if not (np.isfinite(halves.min()) and np.isfinite(halves.max())):
        raise GGUFWriteError("weights reach %g, beyond the F16 range of +-65504: use F32 or Q8_0"
                             % np.abs(x).max())
    return halves.view(np.uint8)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """[..., n] float32 with n a multiple of 32 -> [..., n // 32 * 34] uint8 of Q8_0 blocks."""
    require_finite_float32(x)
    if x.shape[-1] % Q8_0_WEIGHTS:
        raise GGUFWriteError("Q8_0 needs rows of a multiple of %d weights, got rows of %d: use F16 or F32"
                             % (Q8_0_WEIGHTS, x.shape[-1]))
    weights = np.ascontiguousarray(x).reshape(-1, Q8_0_WEIGHTS)  # [n_blocks, 32]
    blocks = np.empty(weights.shape[0], Q8_0.block)  # [n_blocks]
    for first in range(0, blocks.shape[0], CHUNK_BLOCKS):
        _quantize_q8_0_blocks(weights[first:first + CHUNK_BLOCKS], blocks[first:first + CHUNK_BLOCKS])
    return blocks.view(np.uint8).reshape(x.shape[:-1] + (-1,))


def _quantize_q8_0_blocks(weights: np.ndarray, blocks: np.ndarray) -> None:
    """Fill `blocks` ([k] of Q8_0.block) from `weights` ([k, 32] float32), all in float32 like ggml."""
    d = np.abs(weights).max(axis=1, keepdims=True) / np.float32(127)  # [k, 1]
    inverse_d = np.zeros_like(d)
    with np.errstate(over="ignore"):  # both overflows are handled right after
        np.divide(np.float32(1), d, out=inverse_d, where=d != 0)
        blocks["d"] = d[:, 0]
    # max|x| < 3.7e-37 makes 1/d overflow (undefined in ggml's C); such a block's fp16 d is 0 anyway.
    inverse_d[np.isinf(inverse_d)] = 0
    blocks["qs"] = round_half_away_from_zero(weights * inverse_d)
    if not np.isfinite(blocks["d"]).all():
        raise GGUFWriteError("weights reach %g: Q8_0 scales overflow F16 beyond |x| = 8.3e6, use F32"
                             % (d.max() * 127))


def round_half_away_from_zero(x: np.ndarray) -> np.ndarray:
    """C's roundf, exactly (x + 0.5 would round 0.49999997 up to 1).

    >>> round_half_away_from_zero(np.array([0.5, -2.5, 0.49999997, 1.5], np.float32)).tolist()
    [1.0, -3.0, 0.0, 2.0]
    """
    magnitude = np.abs(x)
    whole = np.floor(magnitude)
    whole += magnitude - whole >= 0.5
    return np.copysign(whole, x)


ENCODERS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": encode_f32, "F16": quantize_f16, "Q8_0": quantize_q8_0,
}
