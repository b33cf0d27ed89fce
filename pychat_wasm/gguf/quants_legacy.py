"""Block formats of the plain float types and the legacy 32-weight quants (Q4_0 ... Q8_0).

A block format is a small class: `name` (the ggml type name), `block` (one block's bytes as a numpy
dtype, structured for quants) and `dequantize_blocks(blocks, out)`, which decodes `blocks` ([n] of
`block`) into the float32 array `out` ([n, block_size]) with whole-array numpy operations.
`quants.py` registers the formats and walks tensors through them chunk by chunk.

Bit exactness: every format computes in float32 in the same order as ggml's reference C code
(ggml-quants.c), e.g. Q4_1 is `d * q + m`, so results equal ggml's (and gguf-py's) bit for bit.

Diagrams show byte offsets inside one block; `w[i]` is the i-th unsigned quant of the block.
"""
from __future__ import annotations

import numpy as np


def unpack_fields(packed: np.ndarray, bits: int) -> np.ndarray:
    """Split every byte into 8 // bits fields, lowest bits first: [..., k] -> [..., 8 // bits, k] uint8.

    >>> unpack_fields(np.array([0x21, 0x43], np.uint8), 4).tolist()     # low nibbles, then high
    [[1, 3], [2, 4]]
    >>> unpack_fields(np.array([0b11100100], np.uint8), 2)[:, 0].tolist()
    [0, 1, 2, 3]
    """
    n_fields = 8 // bits
    shifts = np.arange(0, 8, bits, dtype=np.uint8).reshape(n_fields, 1)
    fields = np.empty(packed.shape[:-1] + (n_fields, packed.shape[-1]), np.uint8)
    np.right_shift(packed[..., None, :], shifts, out=fields)  # [..., n_fields, k]
    fields &= (1 << bits) - 1
    return fields


def fp16_column(blocks: np.ndarray, field: str) -> np.ndarray:
    """A per-block fp16 scale as a float32 column [n, 1], ready to broadcast over the block's weights."""
    return blocks[field].astype(np.float32)[:, None]


# -- plain floats: one weight per "block" ----------------------------------------------------------

class F32:
    """IEEE float32, little-endian: copied as is."""
    name = "F32"
    block = np.dtype("<f4")

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        out[:, 0] = blocks


class F16(F32):
    """IEEE float16 (1 sign, 5 exponent, 10 mantissa bits): widened exactly to float32 by the same copy."""
    name = "F16"
    block = np.dtype("<f2")


class BF16:
    """bfloat16 = the top 16 bits of a float32: shift them back into place.

        bits  15   14 ... 7   6 ... 0
             | s | exponent | mantissa |  ->  float32 bits  s exponent mantissa 0000000000000000
    """
    name = "BF16"
    block = np.dtype("<u2")

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        np.left_shift(blocks.astype(np.uint32), 16, out=out.view(np.uint32)[:, 0])


# -- legacy quants: 32 weights per block, one fp16 scale (and minimum) ------------------------------

class Q4_0:
    """4-bit quants around 8: weight = d * (w - 8).

        byte  0        2                                   18
             | d: f16 | qs[16]: low nibble w[i], high w[i+16] |
    """
    name = "Q4_0"
    block = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        q = unpack_fields(blocks["qs"], 4).reshape(out.shape).view(np.int8)  # [n, 32] in 0..15
        q -= 8
        np.multiply(q, fp16_column(blocks, "d"), out=out)


class Q4_1:
    """4-bit quants with a minimum: weight = d * w + m.

        byte  0        2        4                                   20
             | d: f16 | m: f16 | qs[16]: low nibble w[i], high w[i+16] |
    """
    name = "Q4_1"
    block = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (16,))])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        q = unpack_fields(blocks["qs"], 4).reshape(out.shape)  # [n, 32] in 0..15
        np.multiply(q, fp16_column(blocks, "d"), out=out)
        out += fp16_column(blocks, "m")


def five_bit_quants(blocks: np.ndarray, n_weights: int) -> np.ndarray:
    """Q5_0/Q5_1 quants [n, 32] in 0..31: nibbles from `qs`, bit 4 of w[i] is bit i of the u32 `qh`."""
    q = unpack_fields(blocks["qs"], 4).reshape(-1, n_weights)  # [n, 32] low 4 bits
    high = np.unpackbits(blocks["qh"], axis=-1, bitorder="little")  # [n, 32] bit i of qh
    high <<= 4
    q |= high
    return q


class Q5_0:
    """5-bit quants around 16: weight = d * (w - 16).

        byte  0        2                     6                                        22
             | d: f16 | qh: u32, bit i = w[i] bit 4 | qs[16]: low nibble w[i], high w[i+16] |
    """
    name = "Q5_0"
    block = np.dtype([("d", "<f2"), ("qh", "u1", (4,)), ("qs", "u1", (16,))])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        q = five_bit_quants(blocks, out.shape[1]).view(np.int8)  # [n, 32]
        q -= 16
        np.multiply(q, fp16_column(blocks, "d"), out=out)


class Q5_1:
    """5-bit quants with a minimum: weight = d * w + m.

        byte  0        2        4                     8                                        24
             | d: f16 | m: f16 | qh: u32, bit i = w[i] bit 4 | qs[16]: low nibble w[i], high w[i+16] |
    """
    name = "Q5_1"
    block = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "u1", (4,)), ("qs", "u1", (16,))])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        q = five_bit_quants(blocks, out.shape[1])  # [n, 32]
        np.multiply(q, fp16_column(blocks, "d"), out=out)
        out += fp16_column(blocks, "m")


class Q8_0:
    """Signed 8-bit quants: weight = d * qs[i].

        byte  0        2                  34
             | d: f16 | qs[32]: int8 w[i] |
    """
    name = "Q8_0"
    block = np.dtype([("d", "<f2"), ("qs", "i1", (32,))])

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray, out: np.ndarray) -> None:
        np.multiply(blocks["qs"], fp16_column(blocks, "d"), out=out)


LEGACY_FORMATS = (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
