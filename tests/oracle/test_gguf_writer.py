"""Our GGUF writer and quantizers against gguf-py, the independent reference.

Files we write must parse identically with gguf-py's GGUFReader and our GGUFFile, and be byte for
byte the file gguf.GGUFWriter writes for the same calls; quantizers must equal gguf.quants.quantize
bit for bit; every bad input must raise GGUFWriteError before anything is written.
"""
from __future__ import annotations

import os
import tracemalloc
import warnings

import gguf
import gguf.quants
import numpy as np
import pytest

from pychat_wasm.gguf import quants
from pychat_wasm.errors import GGUFWriteError, PychatError
from pychat_wasm.gguf.ggml_types import TYPES_BY_NAME
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.gguf.writer import GGUFWriter, ValueType
from pychat_wasm.gguf.quantize import quantize_f16, quantize_q8_0

from gguf_files import GGUFValue, write_gguf

VT = gguf.GGUFValueType
# (our adder, key, value, array element type or None); gguf-py's adder has the same name.
METADATA = [
    ("add_uint32", "llama.context_length", 2048, None),
    ("add_int32", "tokenizer.ggml.padding_token_id", -1, None),
    ("add_uint64", "general.size", 2 ** 40 + 3, None),
    ("add_float32", "llama.rope.freq_base", 10000.5, None),
    ("add_bool", "tokenizer.ggml.add_bos_token", True, None),
    ("add_bool", "tokenizer.ggml.add_eos_token", False, None),
    ("add_string", "general.name", "tiny – ünïcode ✓", None),
    ("add_string", "größe.schlüssel", "UTF-8 keys work too", None),
    ("add_array", "tokenizer.ggml.tokens", ["<s>", "</s>", "héllo", "▁wörld", ""], ValueType.STRING),
    ("add_array", "tokenizer.ggml.token_type", [1, -3, 2 ** 31 - 1, -2 ** 31], ValueType.INT32),
    ("add_array", "llama.feed_forward_length", [0, 7, 2 ** 32 - 1], ValueType.UINT32),
    ("add_array", "tokenizer.ggml.scores", [0.0, -1.5, 3.25e10, -0.0], ValueType.FLOAT32),
]


def random_tensors(seed: int):
    """name -> (float32 array, ggml type): every type, 1 to 4 dims, sizes that need padding."""
    rng = np.random.RandomState(seed)
    return {
        "token_embd.weight": (rng.randn(5, 64).astype(np.float32), "Q8_0"),
        "blk.0.attn_q.weight": (rng.randn(3, 32).astype(np.float32) * 40, "F16"),
        "output_norm.weight": (rng.randn(7).astype(np.float32), "F32"),
        "blk.0.ffn_gate_exps.weight": (rng.randn(2, 3, 96).astype(np.float32), "Q8_0"),
        "blk.0.conv.weight": (rng.randn(2, 1, 3, 5).astype(np.float32), "F16"),
    }


def ours(tensors, alignment: int = 32) -> GGUFWriter:
    writer = GGUFWriter("llama", alignment=alignment)
    for method, key, value, element_type in METADATA:
        args = (key, value) if element_type is None else (key, value, element_type)
        getattr(writer, method)(*args)
    for name, (array, ggml_type) in tensors.items():
        writer.add_tensor(name, array, ggml_type)
    return writer


def reference_file(path, tensors, alignment: int = 32) -> bytes:
    """The same metadata and tensors written by gguf.GGUFWriter."""
    metadata = {"custom_alignment": alignment} if alignment != 32 else {}
    for method, key, value, element_type in METADATA:
        sub_type = None if element_type is None else VT(int(element_type))
        metadata[key] = GGUFValue(value, VT.ARRAY if sub_type else VT[method[len("add_"):].upper()], sub_type)
    written = []
    for name, (array, ggml_type) in tensors.items():
        qtype = gguf.GGMLQuantizationType[ggml_type]
        encoded = gguf.quants.quantize(array, qtype)
        written.append((name, encoded, qtype) if ggml_type == "Q8_0" else (name, encoded))
    return write_gguf(path, "llama", metadata, written).read_bytes()


def expected_data(array: np.ndarray, ggml_type: str) -> np.ndarray:
    """gguf-py's float32 decoding of gguf-py's encoding of `array`."""
    qtype = gguf.GGMLQuantizationType[ggml_type]
    return np.asarray(gguf.quants.dequantize(gguf.quants.quantize(array, qtype), qtype), np.float32)


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


# -- files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("alignment", [32, 64, 1])
def test_bytes_equal_gguf_py_writer(tmp_path, alignment):
    tensors = random_tensors(0)
    assert ours(tensors, alignment).to_bytes() == reference_file(tmp_path / "ref.gguf", tensors, alignment)


def test_gguf_py_reader_reads_our_file(tmp_path):
    tensors = random_tensors(1)
    path = tmp_path / "ours.gguf"
    ours(tensors).write(path)
    reader = gguf.GGUFReader(str(path))
    fields = {name: field for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    expected_keys = ["general.architecture"] + [key for _, key, _, _ in METADATA]
    assert list(fields) == expected_keys
    assert fields["general.architecture"].contents() == "llama"
    scalar_types = {"add_uint32": VT.UINT32, "add_int32": VT.INT32, "add_uint64": VT.UINT64,
                    "add_float32": VT.FLOAT32, "add_bool": VT.BOOL, "add_string": VT.STRING}
    for method, key, value, element_type in METADATA:
        field = fields[key]
        if element_type is None:
            assert field.types == [scalar_types[method]], key
        else:
            assert field.types == [VT.ARRAY, VT(int(element_type))], key
        if method == "add_float32" or element_type == ValueType.FLOAT32:
            assert np.array(field.contents(), np.float32).tobytes() == np.array(value, np.float32).tobytes()
        else:
            assert field.contents() == value, key
    assert [t.name for t in reader.tensors] == list(tensors)
    for tensor, (array, ggml_type) in zip(reader.tensors, tensors.values()):
        assert tensor.tensor_type == gguf.GGMLQuantizationType[ggml_type]
        assert tuple(int(d) for d in tensor.shape) == tuple(reversed(array.shape))  # ggml order
        qtype = gguf.GGMLQuantizationType[ggml_type]
        decoded = np.asarray(gguf.quants.dequantize(np.asarray(tensor.data), qtype), np.float32)
        assert_bits_equal(decoded.reshape(array.shape), expected_data(array, ggml_type))


def test_our_reader_reads_our_file():
    tensors = random_tensors(2)
    f = GGUFFile(ours(tensors).to_bytes())
    assert f.version == 3
    expected = {"general.architecture": "llama"}
    expected.update((key, value) for _, key, value, _ in METADATA)
    assert list(f.metadata) == list(expected)
    for key, value in expected.items():
        if isinstance(value, float) or key == "tokenizer.ggml.scores":
            assert np.array(f.metadata[key], np.float32).tobytes() == np.array(value, np.float32).tobytes()
        else:
            assert f.metadata[key] == value and type(f.metadata[key]) == type(value), key
    assert f.tensor_names() == list(tensors)
    for name, (array, ggml_type) in tensors.items():
        info = f.tensors[name]
        assert (info.shape, info.type_name, info.offset % 32) == (array.shape, ggml_type, 0)
        decoded = quants.dequantize(f.tensor_bytes(name), info.type_id, info.shape)
        assert_bits_equal(decoded, expected_data(array, ggml_type))


def test_f32_tensors_round_trip_exactly():
    weights = np.random.RandomState(3).randn(4, 6).astype(np.float32)
    writer = GGUFWriter("llama")
    writer.add_tensor("w", weights[:, ::2])  # a non-contiguous view is copied into order
    f = GGUFFile(writer.to_bytes())
    assert_bits_equal(quants.dequantize(f.tensor_bytes("w"), 0, f.tensors["w"].shape), weights[:, ::2])


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"previous model")
    writer = GGUFWriter("llama")
    writer.add_tensor("w", np.ones((2, 32), np.float32))

    def failing_pieces():
        yield b"GGUF half a header"
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_pieces", failing_pieces)
    with pytest.raises(OSError, match="disk full"):
        writer.write(str(path))
    assert path.read_bytes() == b"previous model"
    assert sorted(os.listdir(tmp_path)) == ["model.gguf"]
    monkeypatch.undo()
    writer.write(str(path))
    assert path.read_bytes() == writer.to_bytes()
    assert sorted(os.listdir(tmp_path)) == ["model.gguf"]


def test_memory_stays_near_one_copy():
    weights = np.random.RandomState(4).randn(1024, 4096).astype(np.float32)  # 16 MiB
    writer = GGUFWriter("llama")
    adding = traced_memory(lambda: (writer.add_tensor("f32", weights),  # kept as a view: no copy
                                    writer.add_tensor("q8", weights, "Q8_0")))
    q8_bytes = weights.size // 32 * 34
    assert adding["kept"] < q8_bytes + (1 << 20)
    assert adding["peak"] < q8_bytes + (12 << 20)  # chunk temporaries stay small
    data = []
    serializing = traced_memory(lambda: data.append(writer.to_bytes()))
    assert len(data[0]) > weights.nbytes + q8_bytes
    assert serializing["peak"] < len(data[0]) + (1 << 20)  # one copy: the result


def traced_memory(call) -> dict:
    """Bytes that `call()` allocated and kept, and its peak allocation."""
    tracemalloc.start()
    try:
        call()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"kept": kept, "peak": peak}


# -- quantizers ----------------------------------------------------------------------------------

def awkward_weights(seed: int, scale_limit: float) -> np.ndarray:
    """[23, 64] float32: random rows at scales from 1e-30 to `scale_limit`, zero blocks, exact halves."""
    rng = np.random.RandomState(seed)
    scales = np.logspace(-30, np.log10(scale_limit), 16).astype(np.float32)
    rows = [rng.uniform(-1, 1, 64).astype(np.float32) * s for s in scales]
    rows.append(np.zeros(64, np.float32))
    rows.append(np.concatenate([np.zeros(32), rng.randn(32)]).astype(np.float32))  # one zero block
    rows.append(-np.zeros(64, np.float32))
    ties = [127.0] + [k + 0.5 for k in range(-14, 15)] + [0.49999997, -0.49999997]  # d = 1 exactly
    rows.append(np.array(ties + ties[::-1], np.float32))
    rows.append(rng.randint(-127, 128, 64).astype(np.float32))  # integers: exact quants
    rows.append(np.float32(scale_limit) * np.sign(rng.randn(64)).astype(np.float32))
    rows.append(rng.randn(64).astype(np.float32) * np.float32(1e-7))  # F16 subnormals
    return np.stack(rows)


def near_tie_blocks(seed: int, n_blocks: int = 256) -> np.ndarray:
    """[n_blocks // 2, 64]: blocks whose x * (1/d) lands a few float32 ulps from k + 0.5.

    There float32 arithmetic (ggml's) and exact or float64 arithmetic round to different quants.
    """
    rng = np.random.RandomState(seed)
    amax = rng.uniform(0.5, 2, n_blocks).astype(np.float32)
    inverse_d = np.float32(1) / (amax / np.float32(127))
    ties = (rng.randint(-126, 126, (n_blocks, 31)) + 0.5) / inverse_d[:, None]  # float64
    ulps = rng.randint(-3, 4, ties.shape).astype(np.int32)
    near = (ties.astype(np.float32).view(np.int32) + ulps).view(np.float32)
    return np.concatenate([amax[:, None], near], axis=1).reshape(-1, 64)


def test_quantize_q8_0_bit_exact():
    for seed in range(3):
        for weights in (awkward_weights(seed, 8e6), near_tie_blocks(seed)):
            expected = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no overflow or invalid-value casts on the way
                actual = quantize_q8_0(weights)
            assert actual.dtype == np.uint8 and actual.shape == expected.shape == (len(weights), 68)
            assert actual.tobytes() == expected.tobytes()


def test_quantize_q8_0_chunks_match_whole(monkeypatch):
    weights = np.random.RandomState(5).randn(9, 320).astype(np.float32)
    whole = quantize_q8_0(weights)
    monkeypatch.setattr("pychat_wasm.gguf.quantize.CHUNK_BLOCKS", 7)  # splits rows, leaves a remainder
    assert quantize_q8_0(weights).tobytes() == whole.tobytes()


def test_quantize_f16_bit_exact():
    for seed in range(3):
        weights = awkward_weights(seed, 65504)
        expected = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.F16)
        actual = quantize_f16(weights)
        assert actual.dtype == np.uint8 and actual.shape == (23, 128)
        assert actual.tobytes() == expected.tobytes()


def test_our_q8_0_dequantizer_agrees_with_gguf_py():
    blocks = quantize_q8_0(awkward_weights(6, 1e6))  # [23, 68]
    expected = np.asarray(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q8_0), np.float32)
    assert_bits_equal(quants.dequantize(blocks, TYPES_BY_NAME["Q8_0"].id, (23, 64)), expected)


def test_blocks_too_tiny_to_invert_become_zero():
    weights = np.full((1, 32), 1e-38, np.float32)  # 1 / (max|x| / 127) overflows float32
    weights[0, ::2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 * inf would be NaN, cast to int8 differently per platform
        assert quantize_q8_0(weights).tobytes() == bytes(34)


# -- bad input -----------------------------------------------------------------------------------

def add_tensor(array, ggml_type="F32", name="w"):
    GGUFWriter("llama").add_tensor(name, array, ggml_type)


BAD_TENSORS = [  # (what is wrong, the call, a pattern its message must match)
    ("NaN", lambda: add_tensor(np.array([1.0, np.nan], np.float32)), "NaN or infinite"),
    ("inf in Q8_0", lambda: add_tensor(np.array([[-np.inf] * 32], np.float32), "Q8_0"), "NaN or infinite"),
    ("NaN in F16", lambda: add_tensor(np.array([np.nan], np.float32), "F16"), "NaN or infinite"),
    ("Q8_0 row of 48", lambda: add_tensor(np.ones((2, 48), np.float32), "Q8_0"), "multiple of 32 .* of 48"),
    ("type we cannot write", lambda: add_tensor(np.ones(32, np.float32), "Q4_0"), "cannot write ggml type 'Q4_0'"),
    ("lower-case type", lambda: add_tensor(np.ones(32, np.float32), "q8_0"), "cannot write ggml type 'q8_0'"),
    ("float64", lambda: add_tensor(np.ones(4)), "tensor 'w': weights must be a float32 numpy array, got a float64 array"),
    ("int32", lambda: add_tensor(np.ones(4, np.int32), "F16"), "got a int32 array"),
    ("big-endian", lambda: add_tensor(np.ones(4, ">f4")), "got a >f4 array"),
    ("list", lambda: add_tensor([1.0, 2.0]), "got a list"),
    ("no rows", lambda: add_tensor(np.ones((0, 32), np.float32), "Q8_0"), "tensor 'w': weights must hold at least one row"),
    ("0-d", lambda: add_tensor(np.ones((), np.float32)), r"got shape \(\)"),
    ("5-d", lambda: add_tensor(np.ones((1, 1, 1, 1, 2), np.float32)), "5 dimensions"),
    ("F16 overflow", lambda: add_tensor(np.array([1.0, 70000.0], np.float32), "F16"), "beyond the F16 range"),
    ("Q8_0 overflow", lambda: add_tensor(np.full(32, 1e10, np.float32), "Q8_0"), "Q8_0 scales overflow"),
    ("long name", lambda: add_tensor(np.ones(2, np.float32), name="x" * 64), "longer than 63 bytes"),
    ("bytes name", lambda: add_tensor(np.ones(2, np.float32), name=b"w"), "tensor name must be a str"),
]


@pytest.mark.parametrize("call, pattern", [pytest.param(c, p, id=i) for i, c, p in BAD_TENSORS])
def test_bad_tensors_raise_typed_errors(call, pattern):
    with pytest.raises(GGUFWriteError, match=pattern) as raised:
        call()
    assert isinstance(raised.value, PychatError) and isinstance(raised.value, ValueError)


def test_quantizers_refuse_bad_input_alone():
    with pytest.raises(GGUFWriteError, match="multiple of 32"):
        quantize_q8_0(np.ones(33, np.float32))
    with pytest.raises(GGUFWriteError, match="float32"):
        quantize_f16(np.ones(3, np.float16))


def test_duplicate_tensor_name():
    writer = GGUFWriter("llama")
    writer.add_tensor("w", np.ones(2, np.float32))
    with pytest.raises(GGUFWriteError, match="already added"):
        writer.add_tensor("w", np.ones(3, np.float32))
    assert GGUFFile(writer.to_bytes()).tensors["w"].shape == (2,)


BAD_METADATA = {
    "already set": lambda w: (w.add_uint32("k", 1), w.add_int32("k", 2)),
    "'general.architecture' is already set": lambda w: w.add_string("general.architecture", "gemma3"),
    "does not fit UINT32": lambda w: w.add_uint32("k", -1),
    "does not fit UINT64": lambda w: w.add_uint64("k", 2 ** 64),
    "does not fit INT32": lambda w: w.add_int32("k", 1.5),
    "does not fit FLOAT32": lambda w: w.add_float32("k", 1e300),
    "must be a bool": lambda w: w.add_bool("k", 1),
    "must be a str": lambda w: w.add_string("k", 3),
    "not encodable as UTF-8": lambda w: w.add_string("k", "\ud800"),
    "metadata key must be a str": lambda w: w.add_uint32(7, 1),
    "arrays of value type": lambda w: w.add_array("k", [1], ValueType.UINT64),
    "arrays of value type 'int32'": lambda w: w.add_array("k", [1], "int32"),
    "element of metadata 'k' must be a str": lambda w: w.add_array("k", ["a", 2], ValueType.STRING),
    "element of metadata 'k' does not fit UINT32": lambda w: w.add_array("k", [1, -2], ValueType.UINT32),
    "not as metadata": lambda w: w.add_uint32("general.alignment", 64),
}


@pytest.mark.parametrize("message", sorted(BAD_METADATA))
def test_bad_metadata_raises_typed_errors(message):
    writer = GGUFWriter("llama")
    with pytest.raises(GGUFWriteError, match=message):
        BAD_METADATA[message](writer)
    assert GGUFFile(writer.to_bytes()).metadata["general.architecture"] == "llama"


@pytest.mark.parametrize("alignment", [0, 48, -32, 32.0])
def test_bad_alignment(alignment):
    with pytest.raises(GGUFWriteError, match="power of two"):
        GGUFWriter("llama", alignment=alignment)


def test_arrays_accept_numpy_values_and_raw_type_ids():
    writer = GGUFWriter("llama")
    writer.add_array("scores", np.array([0.5, -1.0], np.float32), 6)
    writer.add_array("ids", np.array([1, 2], np.int64), np.uint32(5))
    writer.add_array("empty", [], ValueType.INT32)
    assert GGUFFile(writer.to_bytes()).metadata == {
        "general.architecture": "llama", "scores": [0.5, -1.0], "ids": [1, 2], "empty": []}
