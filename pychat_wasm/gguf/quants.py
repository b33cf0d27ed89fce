"""Dequantize ggml tensors to float32: whole tensors, or a range of rows so matrix products can stream.

    >>> f = GGUFFile.open("SmolLM2-135M-Instruct.Q4_1.gguf")                     # doctest: +SKIP
    >>> info = f.tensors["blk.0.attn_q.weight"]                                   # doctest: +SKIP
    >>> dequantize(f.tensor_bytes(info.name), info.type_id, info.shape).shape     # doctest: +SKIP
    (576, 576)
    >>> dequantize_rows(f.tensor_bytes(info.name), info.type_id, 576, 64, 128).shape  # doctest: +SKIP
    (64, 576)

Each supported type is a block format (quants_legacy.py, quants_k.py): a numpy dtype for one block
and a vectorized decoder. Here they are registered by type id, sizes are checked, and tensors are
decoded WEIGHTS_PER_DECODE_STEP weights at a time straight into a preallocated output, so the
temporaries of a 178 MB embedding stay about a megabyte each. Results are bit-exact against ggml and gguf-py.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

from ..errors import TensorDataError, UnsupportedQuantTypeError
from .ggml_types import TYPES_BY_NAME, ggml_type, row_nbytes
from .quants_k import K_FORMATS
from .quants_legacy import LEGACY_FORMATS

# Weights one decoder call turns into floats (1 MiB of float32 output); its temporaries scale with it.
# (weights.WEIGHTS_PER_ROW_BAND, the rows a matrix product decodes at once, is a separate, larger bound.)
WEIGHTS_PER_DECODE_STEP = 1 << 18


def _register(formats: Sequence[Any]) -> Dict[int, Any]:
    table = {}
    for fmt in formats:
        t = TYPES_BY_NAME[fmt.name]
        assert fmt.block.itemsize == t.type_size, "%s block dtype has the wrong size" % fmt.name
        table[t.id] = fmt
    return table


FORMATS = _register(LEGACY_FORMATS + K_FORMATS)  # type id -> block format
SUPPORTED_TYPES = tuple(fmt.name for _, fmt in sorted(FORMATS.items()))


def block_format(type_id: int) -> Any:
    """The block format of a type id; UnsupportedQuantTypeError for known types we cannot decode."""
    t = ggml_type(type_id)  # UnknownTensorTypeError for ids that are not ggml types at all
    if type_id not in FORMATS:
        raise UnsupportedQuantTypeError(
            "cannot dequantize %s tensors (ggml type %d); supported types: %s"
            % (t.name, type_id, ", ".join(SUPPORTED_TYPES)))
    return FORMATS[type_id]


def as_uint8(raw: Any) -> np.ndarray:
    """Any bytes-like object (bytes, memoryview, mmap, numpy array) as a flat zero-copy uint8 array."""
    if isinstance(raw, np.ndarray):
        return np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    return np.frombuffer(raw, dtype=np.uint8)


def dequantize(raw: Any, type_id: int, shape: Sequence[int]) -> np.ndarray:
    """Decode a whole tensor: `raw` holds exactly its bytes; returns float32 of `shape` (numpy order).

    >>> half_ones = np.array([1.0, -2.0], np.float16).tobytes()
    >>> dequantize(half_ones, 1, (2,)).tolist()
    [1.0, -2.0]
    """
    fmt = block_format(type_id)
    shape = tuple(int(d) for d in shape)
    n_cols = shape[-1] if shape else 1
    n_rows = int(np.prod(shape[:-1], dtype=np.int64)) if shape else 1
    data = as_uint8(raw)
    expected = n_rows * row_nbytes(type_id, n_cols)
    if data.size != expected:
        raise TensorDataError("%s tensor of shape %s needs %d bytes, got %d"
                              % (fmt.name, shape, expected, data.size))
    out = np.empty(shape, np.float32)
    _dequantize_into(fmt, data, out.reshape(-1))
    return out


def dequantize_rows(raw: Any, type_id: int, n_cols: int, start: int, stop: int) -> np.ndarray:
    """Decode rows [start, stop) of a 2-D weight whose rows of `n_cols` weights are all in `raw`.

    Only the requested rows' bytes are read, so a matrix product can walk a big weight in row bands.

    >>> raw = np.array([1, 2, 3, 4, 5, 6], np.float32).tobytes()    # 3 rows of 2 weights
    >>> dequantize_rows(raw, 0, 2, 1, 3).tolist()
    [[3.0, 4.0], [5.0, 6.0]]
    """
    fmt = block_format(type_id)
    row_bytes = row_nbytes(type_id, n_cols)
    data = as_uint8(raw)
    if row_bytes == 0 or data.size % row_bytes:
        raise TensorDataError("%d bytes are not a whole number of %s rows of %d weights (%d bytes each)"
                              % (data.size, fmt.name, n_cols, row_bytes))
    n_rows = data.size // row_bytes
    if not 0 <= start <= stop <= n_rows:
        raise IndexError("row range [%d, %d) is outside the %d rows" % (start, stop, n_rows))
    out = np.empty((stop - start, n_cols), np.float32)
    _dequantize_into(fmt, data[start * row_bytes:stop * row_bytes], out.reshape(-1))
    return out


def _dequantize_into(fmt: Any, data: np.ndarray, out: np.ndarray) -> None:
    """Decode the blocks in `data` (uint8, whole blocks) into the flat float32 `out`, chunk by chunk."""
    blocks = data.view(fmt.block)  # [n_blocks]
    if blocks.shape[0] == 0:
        return
    out_blocks = out.reshape(blocks.shape[0], -1)  # [n_blocks, block_size]
    step = max(1, WEIGHTS_PER_DECODE_STEP // max(1, out_blocks.shape[1]))
    for first in range(0, blocks.shape[0], step):
        fmt.dequantize_blocks(blocks[first:first + step], out_blocks[first:first + step])
