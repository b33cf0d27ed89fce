"""GGUF reader: metadata, tensor infos and zero-copy tensor views.

Layout of a GGUF file (versions 2 and 3, little-endian):

    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv × (key: string, value_type u32, value)
    n_tensors × (name: string, n_dims u32, dims u64 × n_dims, ggml_type u32, offset u64)
    padding to `general.alignment` (default 32)
    tensor data; each tensor's offset is relative to here
    where string = length u64 + UTF-8 bytes

Every count and length in the header is checked against the bytes that remain before anything is
allocated from it, so a lying header fails fast instead of asking for gigabytes.

    >>> f = GGUFFile.open("model.gguf")                 # doctest: +SKIP
    >>> f.metadata["general.architecture"], f.tensors["token_embd.weight"].shape   # doctest: +SKIP
    ('llama', (49152, 576))
"""
from __future__ import annotations

import mmap
import struct
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import (CorruptHeaderError, DuplicateKeyError, DuplicateTensorError, HeaderTruncatedError,
                      NestedArrayError, NotGGUFError, OverlappingTensorsError, TruncatedFileError,
                      UnsupportedVersionError)
from .ggml_types import ggml_type

GGUF_MAGIC = 0x46554747  # b"GGUF" read as a little-endian u32
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Numeric arrays up to this many elements become lists; longer ones stay zero-copy numpy views of the file,
# so a metadata array costs no more memory than its bytes (as a list, 50 MB of u8 would take 400 MB).
MAX_LISTED_ELEMENTS = 1 << 20

# value type id -> (name, struct format or None for string/array)
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}
_NUMPY_SCALARS = {
    0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
    6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64,
}
_STRING, _ARRAY = 8, 9


class TensorInfo(NamedTuple):
    name: str
    shape: Tuple[int, ...]  # numpy order: ggml dims reversed, rows first
    type_id: int
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return ggml_type(self.type_id).name

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def describe_non_gguf(head: bytes, from_address: bool = False) -> str:
    """Name what a non-GGUF file most likely is, from its first bytes; `from_address`: they are what a URL
    answered (the only place that tells a GGUF file from anything else: the page asks Python).

    >>> describe_non_gguf(b"<!doctype html><html>")
    'it looks like an HTML page, not a model: the download saved a web page'
    >>> describe_non_gguf(b"<!doctype html><html>", from_address=True)
    'the address returned a web page (HTML), not a model file'
    """
    text = head.lstrip().lower()
    if not head:
        return "the file is empty"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml", b"<")):
        if from_address:
            return "the address returned a web page (HTML), not a model file"
        return "it looks like an HTML page, not a model: the download saved a web page"
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the model: fetch the real file (git lfs pull)"
    if text.startswith((b"{", b"[")):
        return "it looks like JSON, not a model (an API error or a config file?)"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive (a wheel?), not a GGUF file: extract the .gguf from it"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: decompress it first"
    return "it is not a GGUF model file"


class _Cursor:
    """Reads little-endian values from a buffer, refusing to read past its end."""

    def __init__(self, buf: memoryview, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise TruncatedFileError(
                "file truncated while reading %s: need %d bytes at offset %d, only %d left"
                % (what, n, self.pos, self.size - self.pos))

    def scalar(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def count(self, what: str, min_item_bytes: int) -> int:
        """A u64 count that must be satisfiable by the bytes left (guards against lying headers)."""
        n = self.scalar("<Q", what)
        left = self.size - self.pos
        if n * min_item_bytes > left:
            raise CorruptHeaderError(
                "absurd %s %d: the %d bytes left can hold at most %d" % (what, n, left, left // max(min_item_bytes, 1)))
        return n

    def string(self, what: str) -> str:
        n = self.count(what + " length", 1)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def strings(self, n: int, what: str) -> List[str]:
        """`n` strings in a row: string() unrolled, since vocabularies hold 50k-260k of them."""
        buf, pos, size, out = self.buf, self.pos, self.size, []
        read_length = struct.Struct("<Q").unpack_from
        for _ in range(n):
            self.pos = pos
            self.need(8, what + " length")
            (length,) = read_length(buf, pos)
            pos += 8
            if length > size - pos:
                raise CorruptHeaderError("absurd %s length %d: the %d bytes left can hold at most %d"
                                         % (what, length, size - pos, size - pos))
            out.append(str(buf[pos:pos + length], "utf-8", "replace"))
            pos += length
        self.pos = pos
        return out

    def array(self, key: str) -> list:
        elem_type = self.scalar("<I", "array type of " + key)
        if elem_type == _STRING:
            return self.strings(self.count("string count of " + key, 8), "element of " + key)
        if elem_type == _ARRAY:
            raise NestedArrayError("metadata %r is an array of arrays, which GGUF readers refuse" % key)
        if elem_type not in _NUMPY_SCALARS:
            raise CorruptHeaderError("unknown array element type %d in %s" % (elem_type, key))
        dtype = np.dtype(_NUMPY_SCALARS[elem_type]).newbyteorder("<")
        n = self.count("element count of " + key, dtype.itemsize)
        values = np.frombuffer(self.buf, dtype=dtype, count=n, offset=self.pos)
        self.pos += n * dtype.itemsize
        return values.tolist() if n <= MAX_LISTED_ELEMENTS else values  # tolist: one C loop, fast for 262k

    def value(self, value_type: int, key: str) -> Any:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type], "value of " + key)
        if value_type == _STRING:
            return self.string("value of " + key)
        if value_type == _ARRAY:
            return self.array(key)
        raise CorruptHeaderError("unknown metadata value type %d for key %r" % (value_type, key))


class _HeaderCursor(_Cursor):
    """A cursor over the first bytes of a file of `size` bytes: counts are checked against the whole file,
    reads against the bytes at hand, and running out of them means the prefix ends inside the header."""

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise HeaderTruncatedError(
                "the header does not end within the first %d bytes (reading %s at offset %d): fetch more of"
                " the file" % (len(self.buf), what, self.pos), needed_bytes=self.pos + max(n, 0))

    def count(self, what: str, min_item_bytes: int) -> int:
        n = _Cursor.count(self, what, min_item_bytes)
        self.need(n * min_item_bytes, what)  # the items start within the bytes at hand
        return n


class GGUFFile:
    """A parsed GGUF file whose tensor data stays in the original buffer (mmap or bytes)."""

    def __init__(self, data: Any, name: str = "<buffer>", file_size: Optional[int] = None):
        """Parse `data`, any bytes-like object (bytes, bytearray, memoryview, numpy uint8, mmap).
        `file_size`: `data` is only the first bytes of a file this big (see GGUFFile.header)."""
        self.name = name
        self.data = np.frombuffer(data, dtype=np.uint8)  # zero-copy uint8 view of the whole file
        self.size = int(self.data.size) if file_size is None else int(file_size)
        cursor = _Cursor if file_size is None else _HeaderCursor
        cur = cursor(memoryview(self.data), self.size)
        self._read_magic_and_version(cur)
        n_tensors = cur.count("tensor count", 24)
        n_kv = cur.count("metadata key count", 13)
        self.metadata: Dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string("metadata key")
            if key in self.metadata:
                raise DuplicateKeyError("%s: metadata key %r appears twice" % (self.name, key))
            self.metadata[key] = cur.value(cur.scalar("<I", "value type of " + key), key)
        self.alignment = self._alignment()
        infos = [self._read_tensor_info(cur) for _ in range(n_tensors)]
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment  # round up
        # Writers pack tensors back to back, each padded to the alignment: no offset can lie beyond that.
        packed_size = sum(-(-info[4] // self.alignment) * self.alignment for info in infos)
        self.tensors: Dict[str, TensorInfo] = {}
        for name, shape, type_id, rel_offset, nbytes in infos:
            if name in self.tensors:
                raise DuplicateTensorError("%s: tensor %r appears twice" % (self.name, name))
            self.tensors[name] = self._place_tensor(name, shape, type_id, rel_offset, nbytes, packed_size)
        self._refuse_overlaps()

    @classmethod
    def open(cls, path: str) -> "GGUFFile":
        """Memory-map `path` read-only; tensor views then cost no memory until touched."""
        with open(path, "rb") as fh:
            try:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                mapped = b""
        return cls(mapped, name=str(path))

    @classmethod
    def header(cls, prefix: Any, file_size: int, name: str = "<header>") -> "GGUFFile":
        """Parse the header from the first bytes of a file of `file_size` bytes (a Range request's answer).

        Metadata and tensor infos are complete; the tensor data is not there (tensor_bytes() is cut short),
        so this serves to describe a model before downloading it. HeaderTruncatedError: fetch more bytes."""
        if file_size < len(prefix):
            raise CorruptHeaderError("%s: %d bytes given for a file of %d" % (name, len(prefix), file_size))
        if len(prefix) < 24:  # magic, version and the two counts
            raise HeaderTruncatedError("%d bytes are too few for a GGUF header: fetch more" % len(prefix), 24)
        return cls(prefix, name=name, file_size=file_size)

    # -- header pieces -------------------------------------------------------------------------

    def _read_magic_and_version(self, cur: _Cursor) -> None:
        head = bytes(self.data[:64])
        if self.size < 4 or struct.unpack_from("<I", head)[0] != GGUF_MAGIC:
            magic = struct.unpack_from("<I", head.ljust(4, b"\0"))[0]
            raise NotGGUFError("%s is not a GGUF file (unknown magic 0x%08x): %s"
                               % (self.name, magic, describe_non_gguf(head)))
        cur.pos = 4
        self.version = cur.scalar("<I", "version")
        if self.version not in SUPPORTED_VERSIONS:
            if self.version & 0xFFFF == 0 and (self.version >> 24) in SUPPORTED_VERSIONS:
                raise UnsupportedVersionError("%s is a big-endian GGUF file, which is not supported" % self.name)
            raise UnsupportedVersionError("%s has GGUF version %d; supported versions are %s"
                                          % (self.name, self.version, ", ".join(map(str, SUPPORTED_VERSIONS))))

    def _alignment(self) -> int:
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CorruptHeaderError("general.alignment must be a power of two, got %r" % (alignment,))
        return alignment

    def _read_tensor_info(self, cur: _Cursor) -> tuple:
        name = cur.string("tensor name")
        n_dims = cur.scalar("<I", "dimension count of " + name)
        if not 1 <= n_dims <= MAX_DIMS:
            raise CorruptHeaderError("tensor %s has %d dimensions (1 to %d allowed)" % (name, n_dims, MAX_DIMS))
        dims = [cur.scalar("<Q", "dimensions of " + name) for _ in range(n_dims)]
        type_id = cur.scalar("<I", "type of " + name)
        rel_offset = cur.scalar("<Q", "offset of " + name)
        t = ggml_type(type_id)
        n_elements = 1
        for d in dims:
            n_elements *= d
        if dims[0] % t.block_size:
            raise CorruptHeaderError("tensor %s: row length %d is not a multiple of the %s block size %d"
                                     % (name, dims[0], t.name, t.block_size))
        nbytes = n_elements // t.block_size * t.type_size
        return name, tuple(reversed(dims)), type_id, rel_offset, nbytes

    def _place_tensor(self, name: str, shape: tuple, type_id: int, rel_offset: int, nbytes: int,
                      packed_size: int) -> TensorInfo:
        start = self.data_offset + rel_offset
        if rel_offset % self.alignment:
            raise CorruptHeaderError("tensor %s offset %d is not aligned to %d" % (name, rel_offset, self.alignment))
        if rel_offset + nbytes > packed_size:
            raise CorruptHeaderError("tensor %s offset %d is out of bounds: all tensors together take %d bytes"
                                     % (name, rel_offset, packed_size))
        if start + nbytes > self.size:
            missing = start + nbytes - self.size
            raise TruncatedFileError("%s is truncated: tensor %s needs %d bytes at offset %d, %d bytes are missing"
                                     " (file has %d bytes)" % (self.name, name, nbytes, start, missing, self.size))
        return TensorInfo(name, shape, type_id, start, nbytes)

    def _refuse_overlaps(self) -> None:
        placed = sorted((t for t in self.tensors.values() if t.nbytes), key=lambda t: t.offset)
        for before, after in zip(placed, placed[1:]):
            if after.offset < before.offset + before.nbytes:
                raise OverlappingTensorsError("%s: tensors %r and %r share bytes (offsets %d and %d, the first"
                                              " takes %d)" % (self.name, before.name, after.name,
                                                              before.offset, after.offset, before.nbytes))

    # -- data ------------------------------------------------------------------------------------

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The raw bytes of a tensor as a zero-copy uint8 view."""
        info = self.tensors[name]
        return self.data[info.offset:info.offset + info.nbytes]

    def type_histogram(self) -> Dict[str, int]:
        """How many tensors of each ggml type, e.g. {'Q4_1': 210, 'F32': 61, 'Q8_0': 1}."""
        hist: Dict[str, int] = {}
        for info in self.tensors.values():
            hist[info.type_name] = hist.get(info.type_name, 0) + 1
        return hist

    def arch_value(self, suffix: str, default: Any = None) -> Any:
        """Metadata under the architecture's prefix: arch_value('block_count') -> llama.block_count."""
        arch = self.metadata.get("general.architecture", "")
        return self.metadata.get("%s.%s" % (arch, suffix), default)

    def tensor_names(self) -> List[str]:
        return list(self.tensors)
