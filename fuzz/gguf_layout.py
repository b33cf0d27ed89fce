"""Where every field of a (valid) GGUF file sits: the map the mutators aim at.

Written independently of the engine's reader (it only has to walk files we made or trust), with gguf-py's
type sizes. A field is (offset, width, kind); kinds are the structures a lying header can lie about:

    count     n_tensors, n_kv, array element counts, n_dims      length   string lengths
    type      metadata value types, array element types, ggml tensor types
    dim       tensor dimensions                                  offset   tensor data offsets
    scalar    metadata numbers (ints and floats)                 version  the GGUF version

Sections (kv pairs, tensor infos, tensor data) are byte spans, for truncation and splicing.
"""
from __future__ import annotations

import struct
from typing import Dict, List, NamedTuple, Tuple

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                  10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


class Field(NamedTuple):
    offset: int
    width: int  # bytes
    kind: str
    fmt: str  # struct format of the value


class Section(NamedTuple):
    start: int
    stop: int
    name: str  # metadata key or tensor name


class Layout(NamedTuple):
    fields: Dict[str, List[Field]]  # kind -> fields
    kv_pairs: List[Section]
    tensor_infos: List[Section]
    tensor_data: List[Section]
    data_offset: int
    size: int
    boundaries: List[int]  # every offset where one structure ends and the next begins


def _boundaries(fields: Dict[str, List[Field]], sections: List[Section], data_offset: int, size: int) -> List[int]:
    points = {0, 4, 8, 16, 24, data_offset, size}
    for s in sections:
        points.update((s.start, s.stop))
    for kind in fields.values():
        for f in kind:
            points.update((f.offset, f.offset + f.width))
    return sorted(p for p in points if 0 <= p <= size)


class _Walker:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0
        self.fields: Dict[str, List[Field]] = {}

    def read(self, fmt: str, kind: str) -> object:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.fields.setdefault(kind, []).append(Field(self.pos, struct.calcsize(fmt), kind, fmt))
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.read("<Q", "length")
        text = self.data[self.pos:self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return text

    def value(self, value_type: int) -> object:
        if value_type == STRING:
            return self.string()
        if value_type == ARRAY:
            elem_type = self.read("<I", "type")
            n = self.read("<Q", "count")
            if elem_type == STRING:
                return [self.string() for _ in range(n)]
            if elem_type == ARRAY:
                return [self.value(ARRAY) for _ in range(n)]
            fmt = SCALAR_FORMATS[elem_type]
            width = struct.calcsize(fmt)
            # Long numeric arrays (scores, token types) get one field per element only for the first 512.
            for i in range(min(n, 512)):
                self.fields.setdefault("scalar", []).append(Field(self.pos + i * width, width, "scalar", fmt))
            self.pos += n * width
            return None
        return self.read(SCALAR_FORMATS[value_type], "scalar")


def scan(data: bytes) -> Layout:
    """The layout of a well-formed GGUF file (version 2 or 3)."""
    w = _Walker(data)
    w.pos = 4
    w.read("<I", "version")
    n_tensors, n_kv = w.read("<Q", "count"), w.read("<Q", "count")
    kv_pairs, alignment = [], 32
    for _ in range(n_kv):
        start = w.pos
        key = w.string()
        value = w.value(w.read("<I", "type"))
        if key == "general.alignment":
            alignment = int(value)
        kv_pairs.append(Section(start, w.pos, key))
    infos: List[Tuple[Section, int, int, int]] = []
    for _ in range(n_tensors):
        start = w.pos
        name = w.string()
        n_dims = w.read("<I", "count")
        dims = [w.read("<Q", "dim") for _ in range(n_dims)]
        type_id = w.read("<I", "type")
        offset = w.read("<Q", "offset")
        infos.append((Section(start, w.pos, name), _nbytes(dims, type_id), offset, type_id))
    data_offset = -(-w.pos // alignment) * alignment
    tensor_data = [Section(data_offset + offset, data_offset + offset + nbytes, section.name)
                   for section, nbytes, offset, _ in infos]
    tensor_infos = [i[0] for i in infos]
    cuts = _boundaries(w.fields, kv_pairs + tensor_infos + tensor_data, data_offset, len(data))
    return Layout(w.fields, kv_pairs, tensor_infos, tensor_data, data_offset, len(data), cuts)


def _nbytes(dims: List[int], type_id: int) -> int:
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    n = 1
    for d in dims:
        n *= d
    return n // block * type_size


def encode_string_kv(key: str, text: str) -> bytes:
    """A metadata pair key = text (a GGUF string value), as bytes."""
    k, v = key.encode("utf-8"), text.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", STRING, len(v)) + v
