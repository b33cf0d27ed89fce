"""The ggml tensor types: id, name, block size (weights per block) and block size in bytes.

The table covers every type a GGUF file may name, so the reader can size and bounds-check any tensor
even when `quants` cannot dequantize its type.
"""
from __future__ import annotations

from typing import NamedTuple

from ..errors import CorruptHeaderError, UnknownTensorTypeError


class GGMLType(NamedTuple):
    id: int
    name: str
    block_size: int  # weights per block
    type_size: int  # bytes per block


_TYPES = [
    GGMLType(0, "F32", 1, 4),
    GGMLType(1, "F16", 1, 2),
    GGMLType(2, "Q4_0", 32, 18),
    GGMLType(3, "Q4_1", 32, 20),
    GGMLType(6, "Q5_0", 32, 22),
    GGMLType(7, "Q5_1", 32, 24),
    GGMLType(8, "Q8_0", 32, 34),
    GGMLType(9, "Q8_1", 32, 36),
    GGMLType(10, "Q2_K", 256, 84),
    GGMLType(11, "Q3_K", 256, 110),
    GGMLType(12, "Q4_K", 256, 144),
    GGMLType(13, "Q5_K", 256, 176),
    GGMLType(14, "Q6_K", 256, 210),
    GGMLType(15, "Q8_K", 256, 292),
    GGMLType(16, "IQ2_XXS", 256, 66),
    GGMLType(17, "IQ2_XS", 256, 74),
    GGMLType(18, "IQ3_XXS", 256, 98),
    GGMLType(19, "IQ1_S", 256, 50),
    GGMLType(20, "IQ4_NL", 32, 18),
    GGMLType(21, "IQ3_S", 256, 110),
    GGMLType(22, "IQ2_S", 256, 82),
    GGMLType(23, "IQ4_XS", 256, 136),
    GGMLType(24, "I8", 1, 1),
    GGMLType(25, "I16", 1, 2),
    GGMLType(26, "I32", 1, 4),
    GGMLType(27, "I64", 1, 8),
    GGMLType(28, "F64", 1, 8),
    GGMLType(29, "IQ1_M", 256, 56),
    GGMLType(30, "BF16", 1, 2),
    GGMLType(34, "TQ1_0", 256, 54),
    GGMLType(35, "TQ2_0", 256, 66),
    GGMLType(39, "MXFP4", 32, 17),
]
TYPES_BY_ID = {t.id: t for t in _TYPES}
TYPES_BY_NAME = {t.name: t for t in _TYPES}


def ggml_type(type_id: int) -> GGMLType:
    """Look up a type by id: ggml_type(3).name -> 'Q4_1'."""
    try:
        return TYPES_BY_ID[type_id]
    except KeyError:
        raise UnknownTensorTypeError("unknown ggml tensor type id %d" % type_id) from None


def row_nbytes(type_id: int, n_cols: int) -> int:
    """Bytes of one row of `n_cols` weights: row_nbytes(2, 64) -> 36 (two Q4_0 blocks)."""
    t = ggml_type(type_id)
    if n_cols % t.block_size:
        raise CorruptHeaderError(
            "row length %d is not a multiple of the %s block size %d" % (n_cols, t.name, t.block_size))
    return n_cols // t.block_size * t.type_size
