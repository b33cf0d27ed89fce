"""Dequantization against gguf-py's reference (gguf.quants.dequantize), bit for bit.

Random blocks cover every bit of every layout (fp16 scale fields kept finite), gguf's own quantizer
gives realistic legacy blocks, row ranges must equal slices of the reference, chunking must keep
temporaries small, and every tensor of both real models must decode exactly.
"""
from __future__ import annotations

import tracemalloc

import gguf
import gguf.quants
import numpy as np
import pytest

from pychat_wasm.gguf import quants
from pychat_wasm.errors import (PychatError, TensorDataError, UnknownTensorTypeError,
                                UnsupportedQuantTypeError)
from pychat_wasm.gguf.ggml_types import TYPES_BY_NAME
from pychat_wasm.gguf.reader import GGUFFile

ALL_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# Byte offsets of the fp16 scale fields inside one block, from ggml's block_* structs (ggml-common.h).
FP16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
               "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
ROW_WEIGHTS = 512  # two K-quant blocks, sixteen legacy blocks
ODD_CHUNK = 5 * 256 + 7  # a chunk size that splits rows and leaves a remainder chunk


def random_rows(name: str, n_rows: int, seed: int) -> np.ndarray:
    """Random bytes for n_rows rows of ROW_WEIGHTS weights, [n_rows, row_bytes]; fp16 scales finite.

    Plain float types keep every bit pattern, NaN and inf included.
    """
    t = TYPES_BY_NAME[name]
    blocks_per_row = ROW_WEIGHTS // t.block_size
    rng = np.random.RandomState(seed)
    raw = rng.randint(0, 256, size=(n_rows * blocks_per_row, t.type_size)).astype(np.uint8)
    for offset in FP16_FIELDS.get(name, []):
        bits = raw[:, offset:offset + 2].copy().view("<u2")
        bits[(bits & 0x7C00) == 0x7C00] ^= 0x4000  # exponent all ones (inf/NaN) -> finite
        raw[:, offset:offset + 2] = bits.view(np.uint8)
    return raw.reshape(n_rows, -1)


def reference(raw_rows: np.ndarray, name: str) -> np.ndarray:
    """gguf-py's dequantization of [rows, row_bytes] -> float32 [rows, n_cols]."""
    return np.asarray(gguf.quants.dequantize(raw_rows, gguf.GGMLQuantizationType[name]), np.float32)


def assert_bits_equal(ours: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Same shape, float32, and identical bit patterns (so NaN payloads and signed zeros count too)."""
    assert ours.dtype == np.float32, what
    assert ours.shape == expected.shape, what
    differ = ours.view(np.uint32) != expected.view(np.uint32)
    if differ.any():
        first = tuple(int(i) for i in np.argwhere(differ)[0])
        pytest.fail("%s: %d weights differ, first at %s: ours %r, reference %r"
                    % (what, differ.sum(), first, ours[first], expected[first]))


def test_supported_types_are_exactly_the_promised_ones():
    assert sorted(quants.SUPPORTED_TYPES) == sorted(ALL_TYPES)


@pytest.mark.parametrize("chunk", [quants.WEIGHTS_PER_DECODE_STEP, ODD_CHUNK], ids=["default-chunk", "odd-chunk"])
@pytest.mark.parametrize("name", ALL_TYPES)
def test_random_blocks_match_gguf(name, chunk, monkeypatch):
    monkeypatch.setattr(quants, "WEIGHTS_PER_DECODE_STEP", chunk)
    raw = random_rows(name, 40, seed=ALL_TYPES.index(name))
    ours = quants.dequantize(raw, TYPES_BY_NAME[name].id, (40, ROW_WEIGHTS))
    assert_bits_equal(ours, reference(raw, name), name)


@pytest.mark.parametrize("name", ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_quantized_weights_match_gguf(name):
    """Blocks written by gguf's quantizer from weight-like floats (real scales, all-equal blocks, zeros)."""
    rng = np.random.RandomState(7)
    weights = (rng.standard_normal((24, ROW_WEIGHTS)) * 0.05).astype(np.float32)  # [24, 512]
    weights[3] = 0.0
    weights[5] = 0.25
    weights[7, :64] = -1e-3
    qtype = gguf.GGMLQuantizationType[name]
    raw = np.ascontiguousarray(gguf.quants.quantize(weights, qtype)).view(np.uint8).reshape(24, -1)
    ours = quants.dequantize(raw, qtype.value, weights.shape)
    assert_bits_equal(ours, reference(raw, name), name)


@pytest.mark.parametrize("name", ALL_TYPES)
def test_row_ranges_equal_slices_of_the_reference(name, monkeypatch):
    monkeypatch.setattr(quants, "WEIGHTS_PER_DECODE_STEP", ODD_CHUNK)
    raw = random_rows(name, 37, seed=100 + ALL_TYPES.index(name))
    expected = reference(raw, name)  # [37, 512]
    type_id = TYPES_BY_NAME[name].id
    for start, stop in [(0, 0), (0, 1), (5, 6), (3, 29), (2, 5), (0, 37), (36, 37), (37, 37)]:
        rows = quants.dequantize_rows(raw, type_id, ROW_WEIGHTS, start, stop)
        assert_bits_equal(rows, expected[start:stop], "%s rows %d:%d" % (name, start, stop))


def test_rows_read_only_their_own_bytes():
    """Bytes outside the requested rows may be anything: garbage there must not matter."""
    raw = random_rows("Q4_K", 10, seed=3)
    expected = reference(raw, "Q4_K")[4:6]
    poisoned = raw.copy()
    poisoned[:4] = 0xFF  # fp16 0xFFFF is NaN: any read of these rows would show in the result
    poisoned[6:] = 0xFF
    assert_bits_equal(quants.dequantize_rows(poisoned, 12, ROW_WEIGHTS, 4, 6), expected)


@pytest.mark.parametrize("to_raw", [
    lambda a: a.tobytes(), lambda a: bytearray(a.tobytes()), lambda a: memoryview(a.tobytes()),
    lambda a: a.reshape(-1), lambda a: a,
], ids=["bytes", "bytearray", "memoryview", "flat-ndarray", "2d-ndarray"])
def test_accepts_any_bytes_like(to_raw):
    raw = random_rows("Q5_1", 4, seed=5)
    expected = reference(raw, "Q5_1")
    assert_bits_equal(quants.dequantize(to_raw(raw), 7, (4, ROW_WEIGHTS)), expected)
    assert_bits_equal(quants.dequantize_rows(to_raw(raw), 7, ROW_WEIGHTS, 1, 3), expected[1:3])


def test_one_dimensional_and_three_dimensional_shapes():
    raw = random_rows("Q8_0", 6, seed=9)
    expected = reference(raw, "Q8_0")  # [6, 512]
    assert_bits_equal(quants.dequantize(raw[0], 8, (ROW_WEIGHTS,)), expected[0])
    assert_bits_equal(quants.dequantize(raw, 8, (2, 3, ROW_WEIGHTS)), expected.reshape(2, 3, ROW_WEIGHTS))


def extra_peak_bytes(decode) -> int:
    """Peak memory traced while `decode()` runs, beyond the array it returns."""
    tracemalloc.start()
    try:
        out = decode()
        return tracemalloc.get_traced_memory()[1] - out.nbytes
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "BF16"])
def test_chunking_keeps_temporaries_small(name):
    """Peak memory beyond the output stays near one chunk, far below a whole-tensor temporary."""
    n_rows = (1 << 23) // ROW_WEIGHTS  # 8M weights: a whole-tensor uint8 temporary alone is 8 MB
    raw = np.tile(random_rows(name, 16, seed=11), (n_rows // 16, 1))
    type_id = TYPES_BY_NAME[name].id
    limit = 2 * 4 * quants.WEIGHTS_PER_DECODE_STEP  # two chunks of float32
    whole = extra_peak_bytes(lambda: quants.dequantize(raw, type_id, (n_rows, ROW_WEIGHTS)))
    band = extra_peak_bytes(lambda: quants.dequantize_rows(raw, type_id, ROW_WEIGHTS, 100, n_rows - 100))
    assert whole < limit, "%s: %d extra bytes" % (name, whole)
    assert band < limit, "%s rows: %d extra bytes" % (name, band)


@pytest.mark.parametrize("name", sorted(set(TYPES_BY_NAME) - set(ALL_TYPES)))
def test_unsupported_types_are_named(name):
    t = TYPES_BY_NAME[name]
    raw = np.zeros(t.type_size * 4, np.uint8)
    with pytest.raises(UnsupportedQuantTypeError) as err:
        quants.dequantize(raw, t.id, (4 * t.block_size,))
    assert name in str(err.value) and "Q4_K" in str(err.value) and "Q8_0" in str(err.value)
    with pytest.raises(UnsupportedQuantTypeError, match=name):
        quants.dequantize_rows(raw, t.id, t.block_size, 0, 1)


def test_unknown_type_id():
    with pytest.raises(UnknownTensorTypeError, match="99"):
        quants.dequantize(b"\0" * 64, 99, (16,))


@pytest.mark.parametrize("name", ["F32", "Q4_1", "Q6_K"])
def test_wrong_byte_lengths_raise_typed_errors(name):
    t = TYPES_BY_NAME[name]
    raw = random_rows(name, 3, seed=13)
    flat = raw.reshape(-1)
    with pytest.raises(TensorDataError, match="needs %d bytes, got %d" % (flat.size, flat.size - 1)):
        quants.dequantize(flat[:-1], t.id, (3, ROW_WEIGHTS))  # too short
    with pytest.raises(TensorDataError, match="got %d" % (flat.size + t.type_size)):
        quants.dequantize(np.concatenate([flat, flat[:t.type_size]]), t.id, (3, ROW_WEIGHTS))  # too long
    with pytest.raises(TensorDataError, match="not a whole number of %s rows" % name):
        quants.dequantize_rows(flat[:-t.type_size], t.id, ROW_WEIGHTS, 0, 1)  # a row cut short
    with pytest.raises(IndexError, match="outside the 3 rows"):
        quants.dequantize_rows(flat, t.id, ROW_WEIGHTS, 2, 4)
    with pytest.raises(IndexError):
        quants.dequantize_rows(flat, t.id, ROW_WEIGHTS, 2, 1)


def test_rows_of_partial_blocks_are_rejected():
    with pytest.raises(PychatError, match="block size 32"):
        quants.dequantize(np.zeros(18 * 3, np.uint8), 2, (2, 48))


# -- every tensor of both real models ---------------------------------------------------------------

FULL_LIMIT = 1 << 21  # tensors up to 2M weights are compared whole
BAND_ROWS = 1024  # bigger ones: three bands of rows (start, middle, end) through dequantize_rows


def check_every_tensor(path) -> int:
    model = GGUFFile.open(str(path))
    failures = []
    for info in model.tensors.values():
        raw = model.tensor_bytes(info.name)
        name = info.type_name
        n_cols = info.shape[-1]
        raw_rows = raw.reshape(-1, raw.size // (info.n_elements // n_cols))  # [rows, row_bytes]
        try:
            if info.n_elements <= FULL_LIMIT:
                ours = quants.dequantize(raw, info.type_id, info.shape)
                assert_bits_equal(ours.reshape(-1, n_cols), reference(raw_rows, name), info.name)
                continue
            n_rows = raw_rows.shape[0]
            middle = n_rows // 2 - BAND_ROWS // 2 + 3  # off any power-of-two boundary
            for start in (0, middle, n_rows - BAND_ROWS):
                ours = quants.dequantize_rows(raw, info.type_id, n_cols, start, start + BAND_ROWS)
                expected = reference(raw_rows[start:start + BAND_ROWS], name)
                assert_bits_equal(ours, expected, "%s rows %d.." % (info.name, start))
        except pytest.fail.Exception as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)
    return len(model.tensors)


@pytest.mark.slow
def test_every_smollm2_tensor_matches_gguf(smollm2_path):
    assert check_every_tensor(smollm2_path) == 272


@pytest.mark.slow
def test_every_gemma3_tensor_matches_gguf(gemma3_path):
    assert check_every_tensor(gemma3_path) == 236
