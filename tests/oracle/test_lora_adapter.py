"""LoRA adapter files (pychat_wasm/model/lora.py) in llama.cpp's format, applied at load, refused for another base.

The bases are tiny_models' random llama (GQA, tied head, q/k rows in llama.cpp's RoPE order) and qwen2 (biases,
a separate head), stored quantized; a FinetuneRun on them (lora_runs.py) gives adapters on every projection,
whose B is set at random so that they matter. llama.cpp's side is tests/oracle/test_lora_llama_cpp.py.

    1. the file: ours as gguf-py reads it (llama.cpp's keys, value types, tensor names and ggml shapes); one
       written with gguf-py as llama.cpp's convert_lora_to_gguf.py writes it round-trips through our reader
    2. applied: transformers + PEFT (LoraConfig / get_peft_model on the dequantized base, A and B read from the
       file by gguf-py) give our logits within 1e-4, at scales 1 and 0.5; removing it gives the base's logits
       bit for bit, under every storage policy
    3. refused, naming both files: another architecture, another tensor shape, another base file (the recorded
       sha256), a tensor the base lacks; not an adapter, half a pair
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import peft
import pytest
import torch
import transformers
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from pychat_wasm.errors import AdapterError, AdapterMismatchError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.forward import Model
from pychat_wasm.model.lora import check_base, open_adapters, read_adapter

from lora_runs import ALPHA, RANK, random_adapter_run
from tiny_models import TINY_TOKENS, write_tiny_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:unknown pre-tokenizer:UserWarning")

LOGIT_TOL = 1e-4
# GGUF projection -> transformers' module in a decoder layer
HF_MODULES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """arch -> (base path, adapter path written by FinetuneRun.adapter_writer, the run)."""
    folder = tmp_path_factory.mktemp("lora")
    found = {}
    for arch in ("llama", "qwen2"):
        base = write_tiny_model(folder / (arch + ".gguf"), arch)
        run = random_adapter_run(base)
        run.adapter_writer(arch + "-lora").write(folder / (arch + ".lora.gguf"))
        found[arch] = (base, folder / (arch + ".lora.gguf"), run)
    return found


def ours(base: Path, adapters=(), policy: str = "float32") -> np.ndarray:
    """Our logits [len(TINY_TOKENS), vocab] of `base` with [(adapter path, scale)] applied."""
    gguf_file = GGUFFile.open(str(base))
    model = Model.from_gguf(gguf_file, policy=policy)
    model.set_adapters(open_adapters(gguf_file, [(GGUFFile.open(str(p)), s) for p, s in adapters]))
    return model.forward(TINY_TOKENS, 0, all_logits=True)


def numpy_tensors(path: Path) -> dict:
    """name -> array in numpy order, as gguf-py reads the file."""
    return {t.name: np.asarray(t.data).reshape(tuple(int(d) for d in reversed(t.shape)))
            for t in gguf.GGUFReader(str(path)).tensors}


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


# ----------------------------------------------------------------------------------------------
# 1. The file


def test_our_adapter_file_is_llama_cpps_format(tiny):
    base, path, run = tiny["llama"]
    reader = gguf.GGUFReader(str(path))
    fields = {k: (f.contents(), [gguf.GGUFValueType(t) for t in f.types]) for k, f in reader.fields.items()}
    string, f32 = [gguf.GGUFValueType.STRING], [gguf.GGUFValueType.FLOAT32]
    assert fields["general.architecture"] == ("llama", string)
    assert fields[gguf.Keys.General.TYPE] == (gguf.GGUFType.ADAPTER, string)
    assert fields[gguf.Keys.Adapter.TYPE] == ("lora", string)
    assert fields[gguf.Keys.Adapter.LORA_ALPHA] == (ALPHA, f32)
    assert fields[gguf.Keys.General.BASE_MODEL_COUNT][0] == 1
    assert fields["pychat_wasm.base.sha256"][0] == hashlib.sha256(base.read_bytes()).hexdigest()
    base_tensors = {t.name: [int(d) for d in t.shape] for t in gguf.GGUFReader(str(base)).tensors}
    names = set()
    for t in reader.tensors:
        stem, suffix = t.name.rsplit(".", 1)
        names.add(stem)
        n_in, n_out = base_tensors[stem]  # ggml dims: [in, out]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(d) for d in t.shape] == ([n_in, RANK] if suffix == "lora_a" else [RANK, n_out]), t.name
    assert names == {"blk.%d.%s.weight" % (i, p) for i in range(run.config.n_layers) for p in HF_MODULES}
    stored = numpy_tensors(path)
    for stem in names:
        np.testing.assert_array_equal(stored[stem + ".lora_b"], run.params[stem[:-len(".weight")] + ".lora_b"])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_file_in_convert_lora_to_ggufs_format_round_trips(tiny, tmp_path, dtype):
    """Written with gguf-py as convert_lora_to_gguf.py does (general.type via add_type, adapter.type, alpha as
    float32, <tensor>.lora_a [rank, in] / .lora_b [out, rank], a mergekit norm that readers skip)."""
    base, _, _ = tiny["llama"]
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in gguf.GGUFReader(str(base)).tensors}
    rng = np.random.default_rng(0)
    expected = {}
    path = tmp_path / "converted.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_name("Converted Lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 12.0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name in ("blk.0.attn_q.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight"):
        out_dim, in_dim = shapes[name]
        a, b = (rng.standard_normal(shape).astype(dtype) for shape in ((6, in_dim), (out_dim, 6)))
        writer.add_tensor(name + ".lora_a", a)
        writer.add_tensor(name + ".lora_b", b)
        expected[name] = (a, b)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(shapes["blk.0.attn_norm.weight"], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    adapter = read_adapter(GGUFFile.open(str(path)))
    assert (adapter.arch, adapter.alpha, adapter.base_sha256) == ("llama", 12.0, "")
    assert set(adapter.pairs) == set(expected)
    for name, (a, b) in expected.items():
        got_a, got_b = adapter.pairs[name]
        assert got_a.dtype == got_b.dtype == np.float32
        np.testing.assert_array_equal(got_a, a.astype(np.float32))
        np.testing.assert_array_equal(got_b, b.astype(np.float32))
    assert adapter.factor("blk.0.attn_q.weight", 0.5) == 0.5 * 12.0 / 6
    check_base(adapter, GGUFFile.open(str(base)))  # no recorded hash: architecture and shapes decide


# ----------------------------------------------------------------------------------------------
# 2. Applied, against transformers + PEFT


def peft_logits(base: Path, adapter: Path, arch: str, scale: float) -> np.ndarray:
    """transformers' model of the GGUF base (dequantized) with PEFT's LoRA layers holding the file's A and B."""
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name,
                                                              dtype=torch.float32)
    reader = gguf.GGUFReader(str(adapter))
    alpha = float(reader.fields[gguf.Keys.Adapter.LORA_ALPHA].contents())
    config = peft.LoraConfig(r=RANK, lora_alpha=alpha * scale, lora_dropout=0.0, bias="none",
                             target_modules=[m.split(".")[1] for m in HF_MODULES.values()])
    tuned = peft.get_peft_model(model, config)
    # transformers undoes llama.cpp's RoPE row order of llama's q and k on load: the rows of their B too
    unpermute = LlamaTensorProcessor(config={"num_attention_heads": model.config.num_attention_heads,
                                             "num_key_value_heads": model.config.num_key_value_heads})
    tensors = numpy_tensors(adapter)
    with torch.no_grad():
        for name in {n.rsplit(".", 1)[0] for n in tensors}:
            _, layer, projection, _ = name.split(".")
            a, b = tensors[name + ".lora_a"], tensors[name + ".lora_b"]
            if arch == "llama" and projection in ("attn_q", "attn_k"):
                b = unpermute.process(b, "blk.%s.%s.weight" % (layer, projection)).weights
            module = tuned.get_submodule("base_model.model.model.layers.%s.%s" % (layer, HF_MODULES[projection]))
            module.lora_A["default"].weight.copy_(torch.from_numpy(np.array(a)))
            module.lora_B["default"].weight.copy_(torch.from_numpy(np.array(b)))
        return tuned(torch.tensor([TINY_TOKENS])).logits[0].numpy()


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_peft_on_the_dequantized_base_gives_our_logits(tiny, arch, scale):
    base, adapter, _ = tiny[arch]
    adapted = ours(base, [(adapter, scale)])
    reference = peft_logits(base, adapter, arch, scale)
    assert max_diff(adapted, reference) < LOGIT_TOL
    assert max_diff(adapted, ours(base)) > 100 * LOGIT_TOL  # the adapter does change them


@pytest.mark.parametrize("policy", ["float32", "int8", "quantized"])
def test_removal_restores_the_base_bit_for_bit(tiny, policy):
    base, adapter, _ = tiny["qwen2"]
    gguf_file = GGUFFile.open(str(base))
    model = Model.from_gguf(gguf_file, policy=policy)
    before = model.forward(TINY_TOKENS, 0, all_logits=True)
    adapters = open_adapters(gguf_file, [(GGUFFile.open(str(adapter)), 1.0)])
    model.set_adapters(adapters + adapters)  # applied twice: twice the update
    twice = model.forward(TINY_TOKENS, 0, all_logits=True)
    model.set_adapters(adapters)
    assert model.cache.ids == []  # the cache held keys and values of other weights
    once = model.forward(TINY_TOKENS, 0, all_logits=True)
    model.set_adapters([])
    np.testing.assert_array_equal(model.forward(TINY_TOKENS, 0, all_logits=True), before)
    doubled = ours(base, [(adapter, 2.0)], policy)
    assert max_diff(twice, doubled) < LOGIT_TOL and max_diff(once, twice) > 100 * LOGIT_TOL



@pytest.mark.parametrize("policy", ["float32", "quantized"])
def test_an_adapted_matrix_reads_as_the_merged_weights(tiny, policy):
    """dequantize_rows of an adapted matrix: gguf-py's dequantized W + scale * alpha / rank * B A (float64)."""
    from gguf.quants import dequantize

    base, adapter, _ = tiny["qwen2"]
    gguf_file = GGUFFile.open(str(base))
    model = Model.from_gguf(gguf_file, policy=policy)
    model.set_adapters(open_adapters(gguf_file, [(GGUFFile.open(str(adapter)), 0.5)]))
    stored = {t.name: t for t in gguf.GGUFReader(str(base)).tensors}["blk.1.ffn_down.weight"]
    weights = np.asarray(dequantize(stored.data, stored.tensor_type), np.float64).reshape(model.layers[1].w_down.shape)
    tensors = numpy_tensors(adapter)
    a, b = (tensors["blk.1.ffn_down.weight.lora_" + s].astype(np.float64) for s in "ab")
    expected = weights + 0.5 * ALPHA / RANK * (b @ a)
    assert max_diff(model.layers[1].w_down.dequantize_rows(3, 40), expected[3:40]) < 1e-5


# ----------------------------------------------------------------------------------------------
# 3. Refused


def test_another_architecture_is_refused(tiny):
    _, adapter, _ = tiny["llama"]
    base, _, _ = tiny["qwen2"]
    with pytest.raises(AdapterMismatchError, match=r"llama.lora.gguf is a LoRA adapter for a llama model, and "
                                                   r".*qwen2.gguf is a qwen2 model"):
        open_adapters(GGUFFile.open(str(base)), [(GGUFFile.open(str(adapter)), 1.0)])


def test_another_base_file_is_refused_by_its_hash(tiny, tmp_path):
    _, adapter, _ = tiny["llama"]
    other = write_tiny_model(tmp_path / "other.gguf", "llama", seed=1)  # the same shapes, other weights
    with pytest.raises(AdapterMismatchError, match=r"llama.lora.gguf was made for tiny-random-llama \(sha256 [0-9a-f]{16}\),"
                                                   r" not for .*other.gguf \(sha256 [0-9a-f]{16}\)"):
        open_adapters(GGUFFile.open(str(other)), [(GGUFFile.open(str(adapter)), 1.0)])


def converted(path: Path, tensors: dict, general_type: str = gguf.GGUFType.ADAPTER) -> GGUFFile:
    """An adapter file as convert_lora_to_gguf.py writes it (no base hash), with `tensors`."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(general_type)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFFile.open(str(path))


@pytest.mark.parametrize("case, error, message", [
    ("narrow", AdapterMismatchError, r"adapts blk.0.attn_q.weight of shape \[64, 32\]; in .*llama.gguf it is \[64, 64\]"),
    ("head", AdapterMismatchError, r"adapts output.weight, which .*llama.gguf does not have"),
    ("half", AdapterError, r"blk.0.attn_q.weight.lora_b is missing \(LoRA tensors come in pairs\)"),
    ("rank", AdapterError, r"blk.0.attn_q.weight has A \[4, 64\] and B \[64, 2\]"),
    ("model", AdapterError, r"is not a LoRA adapter: general.type is 'model'"),
])
def test_bad_adapters_are_refused_by_name(tiny, tmp_path, case, error, message):
    base, _, _ = tiny["llama"]
    a, b = np.ones((4, 64), np.float32), np.ones((64, 4), np.float32)
    tensors = {"narrow": {"blk.0.attn_q.weight.lora_a": a[:, :32], "blk.0.attn_q.weight.lora_b": b},
               "head": {"output.weight.lora_a": a, "output.weight.lora_b": np.ones((96, 4), np.float32)},
               "half": {"blk.0.attn_q.weight.lora_a": a},
               "rank": {"blk.0.attn_q.weight.lora_a": a, "blk.0.attn_q.weight.lora_b": b[:, :2]},
               "model": {"blk.0.attn_q.weight.lora_a": a, "blk.0.attn_q.weight.lora_b": b}}[case]
    adapter_file = converted(tmp_path / (case + ".gguf"), tensors, "model" if case == "model" else "adapter")
    base_file = GGUFFile.open(str(base))
    model = Model.from_gguf(base_file, policy="float32")
    before = model.forward(TINY_TOKENS, 0, all_logits=True)
    with pytest.raises(error, match=message):
        model.set_adapters(open_adapters(base_file, [(adapter_file, 1.0)]))
    np.testing.assert_array_equal(model.forward(TINY_TOKENS, 0, all_logits=True), before)  # nothing changed
