"""The GGUF reader against gguf-py's writer and reader, and its typed errors on bad input."""
from __future__ import annotations

import struct
import tracemalloc

import gguf
import numpy as np
import pytest

from pychat_wasm.errors import (CorruptHeaderError, DuplicateKeyError, DuplicateTensorError, GGUFError,
                                NestedArrayError, NotGGUFError, OverlappingTensorsError, TruncatedFileError,
                                UnknownTensorTypeError, UnsupportedVersionError)
from pychat_wasm.gguf.reader import GGUFFile

from gguf_files import GGUFValue, GGUFValueType, write_gguf

SCALARS = [
    ("u8", "add_uint8", 200), ("i8", "add_int8", -100), ("u16", "add_uint16", 60000), ("i16", "add_int16", -30000),
    ("u32", "add_uint32", 4000000000), ("i32", "add_int32", -2000000000), ("f32", "add_float32", 1.5),
    ("u64", "add_uint64", 2 ** 63 + 5), ("i64", "add_int64", -(2 ** 62)), ("f64", "add_float64", 0.1),
    ("yes", "add_bool", True), ("no", "add_bool", False), ("s", "add_string", "héllo ▁ 世界 🙂"),
]
ARRAYS = {
    "arr.ints": [1, -2, 3],
    "arr.floats": [0.5, -1.25],
    "arr.strings": ["a", "", "ü▁"],
}


def write_sample(path, alignment=None, tensors=()):
    """SCALARS and ARRAYS (and the alignment, if any) with `tensors` [(name, array[, ggml type])]."""
    metadata = {"custom_alignment": alignment} if alignment else {}
    metadata.update({"test." + key: GGUFValue(value, GGUFValueType[method[len("add_"):].upper()])
                     for key, method, value in SCALARS})
    metadata.update(ARRAYS)
    return write_gguf(path, "llama", metadata, tensors)


@pytest.fixture
def sample(tmp_path):
    rng = np.random.default_rng(0)
    q8 = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    tensors = [
        ("vec", rng.standard_normal(7).astype(np.float32)),
        ("mat", rng.standard_normal((3, 5)).astype(np.float16)),
        ("cube", rng.standard_normal((2, 3, 4)).astype(np.float32)),
        ("q8", q8, gguf.GGMLQuantizationType.Q8_0),
    ]
    return write_sample(tmp_path / "sample.gguf", alignment=64, tensors=tensors)


def test_metadata_matches_gguf_py(sample):
    ours = GGUFFile.open(str(sample))
    ref = gguf.GGUFReader(str(sample))
    assert ours.version == 3 and ours.alignment == 64
    for key, _, value in SCALARS:
        got = ours.metadata["test." + key]
        assert got == pytest.approx(value) if isinstance(value, float) else got == value
        assert type(got) is type(value)
    for key, value in ARRAYS.items():
        assert ours.metadata[key] == value
    assert ours.metadata["general.architecture"] == "llama"
    assert set(ours.metadata) == set(ref.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}


def test_tensors_match_gguf_py(sample):
    ours = GGUFFile.open(str(sample))
    ref = gguf.GGUFReader(str(sample))
    assert ours.tensor_names() == [t.name for t in ref.tensors]
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert info.offset == t.data_offset and info.nbytes == t.n_bytes
        assert info.offset % 64 == 0
        assert info.type_id == int(t.tensor_type)
        assert info.n_elements == t.n_elements
        assert bytes(ours.tensor_bytes(t.name)) == bytes(np.asarray(t.data).tobytes())
    assert ours.tensors["mat"].shape == (3, 5)  # numpy order: rows first
    assert ours.tensors["cube"].shape == (2, 3, 4)
    assert ours.tensors["q8"].shape == (4, 64) and ours.tensors["q8"].type_name == "Q8_0"
    assert ours.type_histogram() == {"F32": 2, "F16": 1, "Q8_0": 1}


def test_buffer_and_memmap_views_agree(sample):
    data = sample.read_bytes()
    from_buffer = GGUFFile(bytearray(data))
    from_file = GGUFFile.open(str(sample))
    assert from_buffer.metadata == from_file.metadata
    for name in from_file.tensors:
        assert np.array_equal(from_buffer.tensor_bytes(name), from_file.tensor_bytes(name))
    view = from_buffer.tensor_bytes("vec")
    assert view.base is not None  # a view, not a copy


def test_version_2_is_read_like_version_3(sample):
    data = bytearray(sample.read_bytes())
    struct.pack_into("<I", data, 4, 2)
    assert GGUFFile(data).metadata == GGUFFile(sample.read_bytes()).metadata


@pytest.mark.parametrize("head, says", [
    (b"<!DOCTYPE html><html><body>Not found</body></html>", "HTML page"),
    (b"<html>\n<head>", "HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 98362432\n", "Git LFS pointer"),
    (b'{"error": "unauthorized"}', "JSON"),
    (b"PK\x03\x04" + b"\0" * 40, "zip archive"),
    (b"", "empty"),
    (b"\x00\x01\x02\x03garbage", "not a GGUF"),
])
def test_not_gguf_says_what_it_is(head, says):
    with pytest.raises(NotGGUFError, match=says):
        GGUFFile(head)


def test_html_magic_is_reported_in_hex():
    with pytest.raises(NotGGUFError, match="unknown magic 0x6f64213c"):
        GGUFFile(b"<!doctype html>")


@pytest.mark.parametrize("version", [1, 4, 99])
def test_unsupported_version(sample, version):
    data = bytearray(sample.read_bytes())
    struct.pack_into("<I", data, 4, version)
    with pytest.raises(UnsupportedVersionError, match="version %d" % version):
        GGUFFile(data)


def test_big_endian_is_named(sample):
    data = bytearray(sample.read_bytes())
    struct.pack_into(">I", data, 4, 3)
    with pytest.raises(UnsupportedVersionError, match="big-endian"):
        GGUFFile(data)


def test_truncated_tensor_data_names_tensor_and_missing_bytes(sample):
    data = sample.read_bytes()
    ref = GGUFFile(data)
    last = max(ref.tensors.values(), key=lambda t: t.offset)
    cut = 100
    with pytest.raises(TruncatedFileError) as err:
        GGUFFile(data[:last.offset + last.nbytes - cut])
    assert last.name in str(err.value) and "%d bytes are missing" % cut in str(err.value)


@pytest.mark.parametrize("keep", [3, 10, 30, 200])
def test_truncated_header(sample, keep):
    with pytest.raises(GGUFError):  # NotGGUF for < 4 bytes, else truncated or absurd counts
        GGUFFile(sample.read_bytes()[:keep])


def test_absurd_tensor_count_allocates_nothing(sample):
    data = bytearray(sample.read_bytes())
    struct.pack_into("<Q", data, 8, 2 ** 62)
    with pytest.raises(CorruptHeaderError, match="absurd tensor count"):
        GGUFFile(data)


def test_absurd_string_length(sample):
    data = bytearray(sample.read_bytes())
    struct.pack_into("<Q", data, 24, 2 ** 40)  # length of the first key
    with pytest.raises(CorruptHeaderError, match="absurd metadata key length"):
        GGUFFile(data)


def _tensor_info_pos(data: bytes, name: str) -> int:
    """Byte position just after a tensor's name in the tensor-info section."""
    encoded = struct.pack("<Q", len(name)) + name.encode()
    return data.index(encoded) + len(encoded)


def test_unknown_tensor_type(sample):
    data = bytearray(sample.read_bytes())
    pos = _tensor_info_pos(data, "vec") + 4 + 8  # n_dims u32, one dim u64
    struct.pack_into("<I", data, pos, 77)
    with pytest.raises(UnknownTensorTypeError, match="77"):
        GGUFFile(data)


def test_offset_out_of_bounds(sample):
    data = bytearray(sample.read_bytes())
    pos = _tensor_info_pos(data, "vec") + 4 + 8 + 4
    struct.pack_into("<Q", data, pos, 2 ** 40)
    with pytest.raises(CorruptHeaderError, match="out of bounds"):
        GGUFFile(data)


def test_too_many_dimensions(sample):
    data = bytearray(sample.read_bytes())
    struct.pack_into("<I", data, _tensor_info_pos(data, "vec"), 9)
    with pytest.raises(CorruptHeaderError, match="9 dimensions"):
        GGUFFile(data)


def test_nested_arrays_are_refused_with_their_key(tmp_path):
    """gguf-py writes arrays of arrays; llama.cpp refuses them, and so do we (typed, not a RecursionError)."""
    path = write_gguf(tmp_path / "nested.gguf", "llama", {"arr.nested": [[1, 2], [3, 4, 5]]})
    with pytest.raises(NestedArrayError, match="arr.nested"):
        GGUFFile.open(str(path))


def test_deeply_nested_arrays_fail_typed():
    """7 KB of arrays of arrays (each level: element type ARRAY, count 1) crashed the reader's recursion."""
    key = b"deep"
    header = struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    data = header + struct.pack("<IQ", 9, 1) * 600 + struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)
    with pytest.raises(NestedArrayError, match="deep"):
        GGUFFile(data)


def _renamed(data: bytes, old: str, new: str) -> bytearray:
    """The file with the length-prefixed name `old` (a key or tensor name) spelled `new` (same length)."""
    encoded = struct.pack("<Q", len(old)) + old.encode()
    pos = bytes(data).index(encoded)
    out = bytearray(data)
    out[pos + 8:pos + 8 + len(new)] = new.encode()
    return out


@pytest.mark.parametrize("old, new, theirs, ours", [("test.i8", "test.u8", KeyError, DuplicateKeyError),
                                                     ("mat", "vec", ValueError, DuplicateTensorError)])
def test_duplicate_keys_and_tensor_names_are_refused_as_gguf_py_does(sample, tmp_path, old, new, theirs, ours):
    dup = tmp_path / "dup.gguf"
    dup.write_bytes(_renamed(sample.read_bytes(), old, new))
    with pytest.raises(theirs, match=new):
        gguf.GGUFReader(str(dup))
    with pytest.raises(ours, match=new):
        GGUFFile.open(str(dup))


def test_overlapping_tensors_are_refused(sample):
    """llama.cpp requires each tensor to start where the one before ends; two sharing bytes are refused."""
    data = bytearray(sample.read_bytes())
    vec_offset = struct.unpack_from("<Q", data, _tensor_info_pos(data, "vec") + 4 + 8 + 4)[0]
    struct.pack_into("<Q", data, _tensor_info_pos(data, "cube") + 4 + 3 * 8 + 4, vec_offset)
    with pytest.raises(OverlappingTensorsError, match="vec.*cube|cube.*vec"):
        GGUFFile(data)


def test_a_large_metadata_array_costs_about_its_bytes():
    """50 MB of u8 as a list of Python ints took 350 MB; past 1M numbers the reader keeps a numpy view."""
    key, big = b"arr.big", np.arange(4_000_000, dtype=np.uint8)
    data = (struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<IIQ", 9, 0, big.size) + big.tobytes())
    tracemalloc.start()
    try:
        parsed = GGUFFile(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(parsed.metadata["arr.big"], big)
    assert peak < len(data) // 4


def test_empty_file_on_disk(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(NotGGUFError, match="empty"):
        GGUFFile.open(str(path))


@pytest.mark.parametrize("fixture", ["smollm2_path", "gemma3_path"])
def test_real_models_match_gguf_py(fixture, request):
    path = str(request.getfixturevalue(fixture))
    ours, ref = GGUFFile.open(path), gguf.GGUFReader(path)
    assert len(ours.tensors) == len(ref.tensors)
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert (info.offset, info.nbytes, info.type_id) == (t.data_offset, t.n_bytes, int(t.tensor_type))
        assert info.shape == tuple(int(d) for d in reversed(t.shape))
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        assert key in ours.metadata
        expected = field.contents()
        if isinstance(expected, float):
            assert ours.metadata[key] == pytest.approx(expected)
        elif isinstance(expected, list) and expected and isinstance(expected[0], float):
            assert np.allclose(ours.metadata[key], expected)
        else:
            assert ours.metadata[key] == expected, key
