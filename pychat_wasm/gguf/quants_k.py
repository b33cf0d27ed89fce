"""Block formats of the K-quants: 256-weight super-blocks split into sub-blocks with their own scales.

Same contract as quants_legacy.py: `name`, `block` (structured dtype of one super-block) and a
vectorized `dequantize_blocks(blocks, out)` with `out` float32 [n, 256]. Each format follows the
float32 operation order of ggml's dequantize_row_q*_K, so results are bit-exact.

Diagrams give byte offsets inside one block. Quants are unsigned `w`; "sub-block j" is weights
[16 j, 16 j + 16) for 16-weight sub-blocks and [32 j, 32 j + 32) for 32-weight ones.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .quants_legacy import fp16_column, unpack_fields


def interleaved_crumbs(qs: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K 2-bit quants, uint8 [n, 64] -> [n, 256] in weight order.

    Each half of the block (128 weights) reads its 32 bytes four times, at shifts 0, 2, 4, 6:
    weight 128 h + 32 s + l is bits 2s..2s+1 of qs[32 h + l].
    """
    n = qs.shape[0]
    return unpack_fields(qs.reshape(n, 2, 32), 2).reshape(n, 256)  # [n, 2, 4, 32] -> [n, 256]


def k4_scales_and_mins(packed: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 8 six-bit scales and 8 six-bit mins packed into 12 bytes -> two uint8 [n, 8].

        byte 0..3  | bits 6-7: bits 4-5 of scale 4..7 | bits 0-5: scale 0..3            |
        byte 4..7  | bits 6-7: bits 4-5 of min 4..7   | bits 0-5: min 0..3              |
        byte 8..11 | bits 4-7: bits 0-3 of min 4..7   | bits 0-3: bits 0-3 of scale 4..7 |
    """
    # Work on the transposed bytes [12, n]: long rows keep numpy's inner loops long (tiny [n, 4]
    # slices are several times slower in Pyodide's numpy).
    planar = np.ascontiguousarray(packed.T)  # [12, n]
    first, second, low_bits = planar[0:4], planar[4:8], planar[8:12]  # [4, n] each
    scales = np.empty((8, planar.shape[1]), np.uint8)
    mins = np.empty((8, planar.shape[1]), np.uint8)
    np.bitwise_and(first, 63, out=scales[:4])
    np.bitwise_and(second, 63, out=mins[:4])
    np.bitwise_or(low_bits & 0x0F, (first >> 6) << 4, out=scales[4:])
    np.bitwise_or(low_bits >> 4, (second >> 6) << 4, out=mins[4:])
    return scales.T, mins.T  # [n, 8] views


class Q2_K:
    """2-bit quants, 16 sub-blocks of 16: weight = d * scale_j * w - dmin * min_j.

        byte  0                                16                    80       82          84
             | scales[16]: lo nibble scale_j,   | qs[64]: 2-bit w,    | d: f16 | dmin: f16 |
             |             hi nibble min_j      | see interleaved_crumbs |       |           |
    """
    name = "Q2_K"
    block = np.dtype([("scales", "u1", (16,)), ("qs", "u1", (64,)), ("d", "<f2"), ("dmin", "<f2")])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        packed = blocks["scales"]  # [n, 16]
        scale = fp16_column(blocks, "d") * (packed & 0x0F)  # [n, 16] float32
        minimum = fp16_column(blocks, "dmin") * (packed >> 4)  # [n, 16]
        q = interleaved_crumbs(blocks["qs"]).reshape(n, 16, 16)
        weights = out.reshape(n, 16, 16)
        np.multiply(q, scale[:, :, None], out=weights)
        weights -= minimum[:, :, None]


def q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """Q3_K: 16 six-bit signed scales packed into 12 bytes -> int8 [n, 16] in -32..31.

        bytes 0..7  | lo nibble: bits 0-3 of scale 0..7 | hi nibble: bits 0-3 of scale 8..15 |
        bytes 8..11 | bits 2k..2k+1 of byte 8+i: bits 4-5 of scale 4k+i                        |
    """
    n = packed.shape[0]
    scales = unpack_fields(packed[:, :8], 4).reshape(n, 16)  # [n, 16] bits 0-3
    high = unpack_fields(packed[:, 8:], 2).reshape(n, 16)  # [n, 16] bits 4-5
    high <<= 4
    scales |= high
    signed = scales.view(np.int8)
    signed -= 32
    return signed


class Q3_K:
    """3-bit quants, 16 sub-blocks of 16: weight = d * scale_j * (w - 4), with the high bit of w stored set
    when the weight is NOT offset (ggml keeps `w_low - (hmask bit ? 0 : 4)`).

        byte  0                                   32                      96                 108      110
             | hmask[32]: bit s of byte l = high  | qs[64]: low 2 bits,    | scales[12]:       | d: f16 |
             | bit of weight 32 s + l             | see interleaved_crumbs | see q3_k_scales   |        |
    """
    name = "Q3_K"
    block = np.dtype([("hmask", "u1", (32,)), ("qs", "u1", (64,)), ("scales", "u1", (12,)), ("d", "<f2")])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        scale = fp16_column(blocks, "d") * q3_k_scales(blocks["scales"])  # [n, 16] float32
        q = interleaved_crumbs(blocks["qs"])  # [n, 256] bits 0-1
        high = unpack_fields(blocks["hmask"], 1).reshape(n, 256)  # [n, 256] bit 2
        high <<= 2
        q |= high
        signed = q.view(np.int8)
        signed -= 4
        np.multiply(signed.reshape(n, 16, 16), scale[:, :, None], out=out.reshape(n, 16, 16))


def nibble_quants(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K low 4 bits, uint8 [n, 128] -> [n, 8, 32]: sub-block 2k = low nibbles of qs[32k:32k+32],
    sub-block 2k+1 = their high nibbles."""
    n = qs.shape[0]
    return unpack_fields(qs.reshape(n, 4, 32), 4).reshape(n, 8, 32)  # [n, 4, 2, 32] -> [n, 8, 32]


def scale_and_shift(blocks: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """Q4_K/Q5_K: weights [n, 8, 32] = d * scale_j * q - dmin * min_j, in ggml's float32 order."""
    n = blocks.shape[0]
    scales, mins = k4_scales_and_mins(blocks["scales"])  # [n, 8] each
    scale = fp16_column(blocks, "d") * scales  # [n, 8] float32
    minimum = fp16_column(blocks, "dmin") * mins  # [n, 8]
    weights = out.reshape(n, 8, 32)
    np.multiply(q, scale[:, :, None], out=weights)
    weights -= minimum[:, :, None]


class Q4_K:
    """4-bit quants, 8 sub-blocks of 32: weight = d * scale_j * w - dmin * min_j.

        byte  0        2           4                         16                        144
             | d: f16 | dmin: f16 | scales[12]: 6-bit scale  | qs[128]: 4-bit w, see   |
             |        |           | and min per sub-block    | nibble_quants           |
    """
    name = "Q4_K"
    block = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qs", "u1", (128,))])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        scale_and_shift(blocks, nibble_quants(blocks["qs"]), out)


class Q5_K:
    """5-bit quants, 8 sub-blocks of 32: weight = d * scale_j * w - dmin * min_j.

        byte  0        2           4              16                          48                 176
             | d: f16 | dmin: f16 | scales[12]   | qh[32]: bit s of byte l =  | qs[128]: low 4    |
             |        |           | as Q4_K      | bit 4 of weight 32 s + l   | bits as Q4_K      |
    """
    name = "Q5_K"
    block = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qh", "u1", (32,)),
                      ("qs", "u1", (128,))])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        q = nibble_quants(blocks["qs"])  # [n, 8, 32] bits 0-3
        high = unpack_fields(blocks["qh"], 1)  # [n, 8, 32] bit 4
        high <<= 4
        q |= high
        scale_and_shift(blocks, q, out)


class Q6_K:
    """6-bit quants around 32, 16 sub-blocks of 16: weight = d * scale_j * (w - 32).

        byte  0                         128                       192                  208      210
             | ql[128]: low 4 bits      | qh[64]: high 2 bits     | scales[16]: int8    | d: f16 |
    Per half h (128 weights): weight 128 h + 32 s + l takes
        low  bits: s = 0: ql[64h + l] & 15,  s = 1: ql[64h + 32 + l] & 15,  s = 2, 3: the same bytes >> 4
        high bits: (qh[32h + l] >> 2s) & 3
    """
    name = "Q6_K"
    block = np.dtype([("ql", "u1", (128,)), ("qh", "u1", (64,)), ("scales", "i1", (16,)), ("d", "<f2")])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        n = blocks.shape[0]
        q = unpack_fields(blocks["ql"].reshape(n, 2, 64), 4).reshape(n, 256)  # [n, 2, 2, 64] bits 0-3
        high = unpack_fields(blocks["qh"].reshape(n, 2, 32), 2).reshape(n, 256)  # [n, 2, 4, 32] bits 4-5
        high <<= 4
        q |= high
        signed = q.view(np.int8)
        signed -= 32
        scale = fp16_column(blocks, "d") * blocks["scales"]  # [n, 16] float32
        np.multiply(signed.reshape(n, 16, 16), scale[:, :, None], out=out.reshape(n, 16, 16))


K_FORMATS = (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)
