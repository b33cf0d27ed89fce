"""LoRA adapter files (pychat_wasm/model/lora.py) in llama.cpp's format, applied at load, refused for another base.

The bases are tiny_models' random llama (GQA, tied head, q/k rows in llama.cpp's RoPE order) and qwen2 (biases,
a separate head), stored quantized; a FinetuneRun on them gives adapters on every projection, whose B (zero
after initialisation) is set at random so that they matter.

    1. the file: ours as gguf-py reads it (llama.cpp's keys, value types, tensor names and ggml shapes); one
       written with gguf-py as llama.cpp's convert_lora_to_gguf.py writes it round-trips through our reader
    2. applied: transformers + PEFT (LoraConfig / get_peft_model on the dequantized base, A and B read from the
       file by gguf-py) give our logits within 1e-4, at scales 1 and 0.5; removing it gives the base's logits
       bit for bit, under every storage policy
    3. llama.cpp (node-llama-cpp's context `lora` option, tests/support/llama_cpp_greedy.mjs) applies our adapter
       to an F32 base: its logits within 1e-4 of ours and of our merged export's, the same greedy tokens
    4. refused, naming both files: another architecture, another tensor shape, another base file (the recorded
       sha256), a tensor the base lacks; not an adapter, half a pair
    5. SmolLM2 (slow): llama.cpp's greedy tokens with our adapter on the Q4_1 file = ours = llama.cpp's on our
       merged Q8_0 export, where no near-tie intervenes
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import gguf
import numpy as np
import peft
import pytest
import torch
import transformers
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from pychat_wasm.chat.load import plan_load
from pychat_wasm.errors import AdapterError, AdapterMismatchError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.forward import Model
from pychat_wasm.model.lora import check_base, open_adapters, read_adapter
from pychat_wasm.train.data import TrainingData
from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings

from tiny_models import TINY_TOKENS, write_tiny_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:unknown pre-tokenizer:UserWarning")

REPO = Path(__file__).resolve().parents[2]
LOGIT_TOL = 1e-4
RANK, ALPHA = 4, 8.0
# Conversations the tiny "tokN" vocabulary encodes (only <s> and </s> parse): the run needs some to exist.
TOKEN_CHATS = [[{"role": "user", "content": "<s>" * (1 + i % 3)},
                {"role": "assistant", "content": "<s>" * (1 + i % 2) + "</s><s>"}] for i in range(6)]
# GGUF projection -> transformers' module in a decoder layer
HF_MODULES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj"}


def random_adapter_run(base: Path, seed: int = 3, size: float = 0.3) -> FinetuneRun:
    """A run on `base` with adapters on every projection whose B is random (not zero): they change the logits."""
    run = FinetuneRun(FinetuneSettings(rank=RANK, alpha=ALPHA, targets="attn+mlp"), GGUFFile.open(str(base)),
                      TrainingData([], TOKEN_CHATS))
    rng = np.random.default_rng(seed)
    for name in sorted(run.trainable):
        if name.endswith(".lora_b"):
            run.params[name][...] = size * rng.standard_normal(run.params[name].shape)
    return run


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
    assert fields["pychat_wasm.base.sha256"][0] == __import__("hashlib").sha256(base.read_bytes()).hexdigest()
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


# ----------------------------------------------------------------------------------------------
# 3. llama.cpp


def llama_cpp(model: Path, vocab_size: int, jobs: list, lora=()) -> list:
    """tests/support/llama_cpp_greedy.mjs on `model` with [(adapter path, scale)] in the context's `lora`."""
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "node-llama-cpp").is_dir():
        pytest.fail("node and node_modules/node-llama-cpp are needed: run npm install (scripts/setup.sh)")
    request = {"model": str(model), "vocab_size": vocab_size, "jobs": jobs,
               "lora": [{"filePath": str(path), "scale": scale} for path, scale in lora] or None}
    done = subprocess.run([node, str(REPO / "tests" / "support" / "llama_cpp_greedy.mjs")], input=json.dumps(request),
                          capture_output=True, text=True, cwd=str(REPO), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["results"]


def greedy(model: Model, ids: list, n: int):
    """Our greedy continuation of `ids` (n tokens) and, at each, the gap between the best two logits."""
    logits = model.forward(ids, 0)
    tokens, gaps = [], []
    for _ in range(n):
        top = np.sort(logits)[-2:]
        tokens.append(int(logits.argmax()))
        gaps.append(float(top[1] - top[0]))
        logits = model.forward([tokens[-1]], len(ids) + len(tokens) - 1)
    return tokens, gaps


@pytest.mark.slow
def test_llama_cpp_applies_our_adapter_as_we_do(tmp_path):
    """On an F32 base (the tiny llama dequantized: llama.cpp then computes in float32 like us), with our
    adapter at scale 0.5: llama.cpp's logits and greedy tokens, ours, and llama.cpp's on our merged export."""
    quantized = write_tiny_model(tmp_path / "quantized.gguf", "llama")
    random_adapter_run(quantized, size=0.0).gguf_writer("F32").write(tmp_path / "base.gguf")  # B = 0: the base
    base = tmp_path / "base.gguf"
    run = random_adapter_run(base)
    run.adapter_writer("tiny-lora").write(tmp_path / "tiny.lora.gguf")
    run.lora_scale *= 0.5  # the merged export at the scale llama.cpp and we apply the adapter with
    run.gguf_writer("F32").write(tmp_path / "merged.gguf")
    lora = [(tmp_path / "tiny.lora.gguf", 0.5)]
    gguf_file = GGUFFile.open(str(base))
    model = Model.from_gguf(gguf_file, policy="float32")
    model.set_adapters(open_adapters(gguf_file, [(GGUFFile.open(str(p)), s) for p, s in lora]))
    adapted = model.forward(TINY_TOKENS, 0, all_logits=True)
    tokens, gaps = greedy(model, TINY_TOKENS, 8)
    assert min(gaps) > 1e-2  # no near-tie for float32 rounding to decide
    job = [{"ids": TINY_TOKENS, "logits": True, "n_gen": 8}]
    vocab = run.config.vocab_size
    with_adapter, = llama_cpp(base, vocab, job, lora)
    merged, = llama_cpp(tmp_path / "merged.gguf", vocab, job)
    plain, = llama_cpp(base, vocab, job)
    assert max_diff(with_adapter["logits"], adapted) < LOGIT_TOL
    assert max_diff(merged["logits"], adapted) < LOGIT_TOL
    assert max_diff(plain["logits"], adapted) > 100 * LOGIT_TOL  # llama.cpp did apply it
    assert with_adapter["generated"] == merged["generated"] == tokens


# ----------------------------------------------------------------------------------------------
# 4. Refused


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


# ----------------------------------------------------------------------------------------------
# 5. SmolLM2 and llama.cpp

SMOLLM2_PROMPTS = ["What is the capital of France?", "Give me three tips for sleeping well.",
                   "Write a haiku about the sea.", "What is 12 times 7?"]
GREEDY_TOKENS = 32
# llama.cpp multiplies Q4_1 and Q8_0 weights with activations rounded to 8 bits, and the merged Q8_0 export rounds
# the weights to 8 bits: its best token differed from ours where our best two logits were up to 0.18 apart
# (measured on these prompts). Where they are TIE or more apart, the best token must be the same.
TIE = 0.5


@pytest.mark.slow
def test_llama_cpp_gives_our_greedy_tokens_with_our_smollm2_adapter(smollm2_path, tmp_path):
    """Our adapter (rank 8 on attention, B random) on the Q4_1 file, greedy: llama.cpp with the adapter in its
    context, and on our merged Q8_0 export, picks our token after every prefix of our answer where no near-tie
    intervenes, and writes our answer up to the first near-tie; without the adapter it writes another."""
    chats = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]
    run = FinetuneRun(FinetuneSettings(), GGUFFile.open(str(smollm2_path)), TrainingData([], chats))
    rng = np.random.default_rng(1)
    for name in sorted(run.trainable):
        if name.endswith(".lora_b"):
            run.params[name][...] = 0.05 * rng.standard_normal(run.params[name].shape)
    adapter, merged = tmp_path / "smollm2.lora.gguf", tmp_path / "merged.gguf"
    run.adapter_writer("smollm2-lora").write(adapter)
    run.gguf_writer("Q8_0").write(merged)
    assert adapter.stat().st_size < 4e6  # rank 8 on 4 x 30 matrices: 0.9 M float32 weights
    plan = plan_load(GGUFFile.open(str(smollm2_path)), policy="float32")
    model = Model.from_plan(plan)
    model.set_adapters(open_adapters(plan.gguf, [(GGUFFile.open(str(adapter)), 1.0)]))
    jobs, ours = [], []
    for prompt in SMOLLM2_PROMPTS:
        ids = plan.tokenizer.encode(plan.template.render([{"role": "user", "content": prompt}],
                                                         add_generation_prompt=True), add_special=False,
                                    parse_special=True)
        tokens, gaps = greedy(model, ids, GREEDY_TOKENS)
        jobs += [{"ids": ids + tokens[:-1], "argmax": True}, {"ids": ids, "n_gen": GREEDY_TOKENS}]
        ours.append((len(ids), tokens, gaps))
    vocab = plan.config.vocab_size
    runs = {"adapter": llama_cpp(smollm2_path, vocab, jobs, [(adapter, 1.0)]), "merged": llama_cpp(merged, vocab, jobs)}
    compared = 0
    for i, (n_prompt, tokens, gaps) in enumerate(ours):
        clear = [j for j in range(GREEDY_TOKENS) if gaps[j] >= TIE]
        first_tie = next((j for j in range(GREEDY_TOKENS) if gaps[j] < TIE), GREEDY_TOKENS)
        compared += len(clear)
        for name, results in runs.items():
            best = results[2 * i]["argmax"][n_prompt - 1:]  # after the prompt, then after each of our tokens
            assert [best[j] for j in clear] == [tokens[j] for j in clear], (name, SMOLLM2_PROMPTS[i])
            assert results[2 * i + 1]["generated"][:first_tie] == tokens[:first_tie], (name, SMOLLM2_PROMPTS[i])
    assert compared >= 64, compared  # most positions are clear of near-ties
    base = llama_cpp(smollm2_path, vocab, jobs[1::2])
    assert [r["generated"][:4] for r in base] != [r["generated"][:4] for r in runs["adapter"][1::2]]
