"""GGUF writer: typed metadata and F32 / F16 / Q8_0 tensors, to a file or to bytes (for the browser).

It writes GGUF version 3, little-endian, laid out like llama.cpp and gguf-py write it:

    magic "GGUF" | version u32 = 3 | n_tensors u64 | n_kv u64
    n_kv × (key: string, value_type u32, value)           general.architecture first
    n_tensors × (name: string, n_dims u32, dims u64 × n_dims, ggml_type u32, offset u64)
    zero padding to `general.alignment` (default 32)
    n_tensors × (tensor data, zero padding to the alignment); offsets count from the first tensor
    where string = length u64 + UTF-8 bytes, dims are in ggml order (numpy's reversed)
    and an array value = element type u32 + count u64 + elements

    >>> writer = GGUFWriter("llama")
    >>> writer.add_uint32("llama.context_length", 2048)
    >>> writer.add_array("tokenizer.ggml.tokens", ["<s>", "hi"], ValueType.STRING)
    >>> writer.add_tensor("output_norm.weight", np.ones((2, 32), np.float32), "Q8_0")
    >>> from pychat_wasm.gguf.reader import GGUFFile
    >>> f = GGUFFile(writer.to_bytes())
    >>> f.metadata["llama.context_length"], f.metadata["tokenizer.ggml.tokens"]
    (2048, ['<s>', 'hi'])
    >>> f.tensors["output_norm.weight"].shape, f.tensors["output_norm.weight"].type_name
    ((2, 32), 'Q8_0')
    >>> writer.write("model.gguf")                                      # doctest: +SKIP
"""
from __future__ import annotations

import os
import struct
from enum import IntEnum
from typing import Any, Dict, Iterable, Iterator, NamedTuple, Tuple, Union

import numpy as np

from ..errors import GGUFWriteError
from .ggml_types import TYPES_BY_NAME
from .reader import _SCALARS, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS
from .quantize import ENCODERS

GGUF_VERSION = 3
ARCHITECTURE_KEY = "general.architecture"
ALIGNMENT_KEY = "general.alignment"
MAX_NAME_BYTES = 63  # llama.cpp refuses tensor names of GGML_MAX_NAME (64) bytes or more


class ValueType(IntEnum):
    """The GGUF metadata value type ids this writer emits (the GGUF spec's gguf_metadata_value_type)."""
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10


ARRAY_ELEMENT_TYPES = (ValueType.STRING, ValueType.INT32, ValueType.UINT32, ValueType.FLOAT32)


class _Tensor(NamedTuple):
    shape: Tuple[int, ...]  # numpy order, rows first
    type_id: int
    data: np.ndarray  # uint8 [n_bytes], encoded


def _pack_string(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise GGUFWriteError("%s must be a str, got %s" % (what, type(text).__name__))
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GGUFWriteError("%s is not encodable as UTF-8: %s" % (what, exc)) from None
    return struct.pack("<Q", len(raw)) + raw


def _pack_numbers(value_type: int, values: Iterable[Any], what: str) -> bytes:
    values = list(values)
    try:
        return struct.pack("<%d%s" % (len(values), _SCALARS[value_type][1:]), *values)
    except (struct.error, OverflowError) as exc:
        raise GGUFWriteError("%s does not fit %s: %s" % (what, ValueType(value_type).name, exc)) from None


class GGUFWriter:
    """Collects metadata and tensors in order, then serializes them with `write(path)` or `to_bytes()`.

    `alignment` (a power of two) pads the start of every tensor; other than 32 it is written as
    general.alignment. Tensors are encoded when added; F32 ones keep a view of the caller's array
    (no copy), so do not modify it before writing.
    """

    def __init__(self, arch: str, alignment: int = DEFAULT_ALIGNMENT):
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFWriteError("alignment must be a power of two, got %r" % (alignment,))
        self.alignment = alignment
        self._metadata: Dict[str, bytes] = {}  # key -> value type u32 + value
        self._tensors: Dict[str, _Tensor] = {}
        self.add_string(ARCHITECTURE_KEY, arch)
        if alignment != DEFAULT_ALIGNMENT:
            self.add_uint32(ALIGNMENT_KEY, alignment)

    # -- metadata ----------------------------------------------------------------------------------

    def add_uint32(self, key: str, value: int) -> None:
        self._add(key, ValueType.UINT32, _pack_numbers(ValueType.UINT32, [value], "metadata %r" % key))

    def add_int32(self, key: str, value: int) -> None:
        self._add(key, ValueType.INT32, _pack_numbers(ValueType.INT32, [value], "metadata %r" % key))

    def add_uint64(self, key: str, value: int) -> None:
        self._add(key, ValueType.UINT64, _pack_numbers(ValueType.UINT64, [value], "metadata %r" % key))

    def add_float32(self, key: str, value: float) -> None:
        self._add(key, ValueType.FLOAT32, _pack_numbers(ValueType.FLOAT32, [value], "metadata %r" % key))

    def add_bool(self, key: str, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise GGUFWriteError("metadata %r must be a bool, got %s" % (key, type(value).__name__))
        self._add(key, ValueType.BOOL, struct.pack("<?", value))

    def add_string(self, key: str, value: str) -> None:
        self._add(key, ValueType.STRING, _pack_string(value, "metadata %r" % key))

    def add_array(self, key: str, values: Iterable[Any], value_type: Union[ValueType, int]) -> None:
        """An array of strings, int32, uint32 or float32 (`value_type` a ValueType or its GGUF id)."""
        if value_type not in ARRAY_ELEMENT_TYPES:
            raise GGUFWriteError("metadata %r: arrays of value type %r are not supported; use one of %s"
                                 % (key, value_type, ", ".join(t.name for t in ARRAY_ELEMENT_TYPES)))
        element_type = ValueType(value_type)
        values = list(values)
        what = "an element of metadata %r" % key
        if element_type == ValueType.STRING:
            payload = b"".join(_pack_string(value, what) for value in values)
        else:
            payload = _pack_numbers(element_type, values, what)
        self._add(key, ValueType.ARRAY, struct.pack("<IQ", element_type, len(values)) + payload)

    def _add(self, key: str, value_type: ValueType, payload: bytes) -> None:
        _pack_string(key, "a metadata key")  # fails early on keys the header could not hold
        if key in self._metadata:
            raise GGUFWriteError("metadata key %r is already set" % key)
        entry = struct.pack("<I", value_type) + payload
        if key == ALIGNMENT_KEY and entry != struct.pack("<II", ValueType.UINT32, self.alignment):
            raise GGUFWriteError("set the alignment with GGUFWriter(arch, alignment=...), not as metadata")
        self._metadata[key] = entry

    # -- tensors -----------------------------------------------------------------------------------

    def add_tensor(self, name: str, array: np.ndarray, ggml_type: str = "F32") -> None:
        """Add float32 `array` ([rows, cols] or up to 4 dims, numpy order), encoded as `ggml_type`."""
        encoded_name = _pack_string(name, "a tensor name")
        if len(encoded_name) - 8 > MAX_NAME_BYTES:
            raise GGUFWriteError("tensor name %r is longer than %d bytes" % (name, MAX_NAME_BYTES))
        if name in self._tensors:
            raise GGUFWriteError("tensor %r is already added" % name)
        if ggml_type not in ENCODERS:
            raise GGUFWriteError("cannot write ggml type %r; supported types: %s"
                                 % (ggml_type, ", ".join(ENCODERS)))
        if isinstance(array, np.ndarray) and array.ndim > MAX_DIMS:
            raise GGUFWriteError("tensor %r has %d dimensions, GGUF allows at most %d"
                                 % (name, array.ndim, MAX_DIMS))
        try:
            data = ENCODERS[ggml_type](array)  # uint8 [..., bytes per row]
        except GGUFWriteError as exc:
            raise GGUFWriteError("tensor %r: %s" % (name, exc)) from None
        self._tensors[name] = _Tensor(tuple(array.shape), TYPES_BY_NAME[ggml_type].id, data.reshape(-1))

    # -- output ------------------------------------------------------------------------------------

    def write(self, path: Union[str, os.PathLike]) -> None:
        """Write the file via `path`.tmp, renamed into place only once complete."""
        path = os.fspath(path)
        partial = path + ".tmp"
        try:
            with open(partial, "wb") as fh:
                for piece in self._pieces():
                    fh.write(piece)
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise

    def to_bytes(self) -> bytes:
        """The whole file as bytes, built in one pass: the only copy made of the encoded tensors."""
        return b"".join(self._pieces())

    def _pieces(self) -> Iterator[Any]:
        """The file as consecutive bytes-like pieces: the header, then each tensor and its padding."""
        yield self._header()
        for tensor in self._tensors.values():
            yield memoryview(tensor.data)
            yield self._padding(tensor.data.size)

    def _header(self) -> bytes:
        parts = [struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(self._tensors), len(self._metadata))]
        for key, entry in self._metadata.items():
            parts += [_pack_string(key, "a metadata key"), entry]
        offset = 0  # relative to the start of the tensor data
        for name, tensor in self._tensors.items():
            dims = tuple(reversed(tensor.shape))  # ggml order: row length first
            parts += [_pack_string(name, "a tensor name"),
                      struct.pack("<I%dQIQ" % len(dims), len(dims), *dims, tensor.type_id, offset)]
            offset += tensor.data.size + len(self._padding(tensor.data.size))
        header = b"".join(parts)
        return header + self._padding(len(header))

    def _padding(self, n_bytes: int) -> bytes:
        return bytes(-n_bytes % self.alignment)
