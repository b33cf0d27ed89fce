"""A model split across workers (pychat_wasm/model/tensor_parallel.py) computes what the whole model computes.

The workers here are threads that sum and gather through Python lists and a barrier: the same calls, in the
same order, that web/tensor_parallel.js serves through a SharedArrayBuffer in the browser. The reference is
the unsplit Model on the same file (itself tested against transformers and llama.cpp in test_model.py), also
with a LoRA adapter applied (each worker keeps the rows of B or columns of A its shard has; the unsplit model's
adapters are tested against PEFT and llama.cpp in test_lora_adapter.py and test_lora_llama_cpp.py).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pychat_wasm.errors import InvalidSettingError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.config import ModelConfig
from pychat_wasm.model.lora import adapter_writer, open_adapters
from pychat_wasm.model.forward import Model
from pychat_wasm.model.tensor_parallel import Collective, max_workers, plan_shards
from pychat_wasm.model.matrices import Int8Matrix
from texts import GEMMA_TOKENS, GOLDEN_IDS, GOLDEN_PROMPT
from tiny_models import TINY_SPECS, TINY_TOKENS, write_tiny_model

# 9 query heads over 3 KV heads (SmolLM2's proportions): 2 workers get 4 and 5 heads, and KV head 1 is on both.
SPECS = {
    "llama-9-3": ("llama", TINY_SPECS["llama"]._replace(dim=288, n_heads=9, n_kv_heads=3, head_dim=32)),
    "qwen2": ("qwen2", TINY_SPECS["qwen2"]),
    "gemma3": ("gemma3", TINY_SPECS["gemma3"]),
    "qwen3": ("qwen3", TINY_SPECS["qwen3"]),
    "phi3": ("phi3", TINY_SPECS["phi3"]),  # the rows of its fused q/k/v and gate/up matrices are cut per worker
    # 256 FFN units (8 blocks of 32) split into up to 8 workers: over 5-8 workers each gets 1 or 2 of the 9
    # heads; gemma3's 2 heads leave the workers beyond them with none
    "llama-9-3-wide": ("llama", TINY_SPECS["llama"]._replace(dim=288, n_heads=9, n_kv_heads=3, head_dim=32,
                                                             ffn_dim=256)),
    "gemma3-wide": ("gemma3", TINY_SPECS["gemma3"]._replace(ffn_dim=256)),
}
WORKERS = [2, 3, 4, 5, 8]


class ThreadCollective(Collective):
    """Workers as threads: each puts its part in a shared slot, all wait, all read every slot in rank order."""

    def __init__(self, rank: int, slots: list, barrier: threading.Barrier):
        self.rank, self.workers, self.slots, self.barrier = rank, len(slots), slots, barrier

    def _exchange(self, value):
        self.slots[self.rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read it
        return values

    def sum_(self, x):
        parts = self._exchange(x.copy())
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        x[...] = total

    def gather(self, part, out, start):
        for begin, values in self._exchange((start, part.copy())):
            out[begin:begin + len(values)] = values


def sharded_models(path, workers, policy, context_length=None):
    gguf = GGUFFile.open(path)
    slots, barrier = [None] * workers, threading.Barrier(workers)
    models = [Model.from_gguf(gguf, policy=policy, context_length=context_length, workers=workers, rank=rank,
                              collective=ThreadCollective(rank, slots, barrier)) for rank in range(workers)]
    assert [m.shard.rank for m in models] == list(range(workers))  # split as asked: each holds its own part
    return models


def run_all(models, tokens, start_pos, **flags):
    """Every worker's forward(tokens, start_pos, **flags), each on its own thread."""
    with ThreadPoolExecutor(len(models)) as pool:
        return list(pool.map(lambda m: m.forward(tokens, start_pos, **flags), models))


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tp")
    return {name: write_tiny_model(folder / (name + ".gguf"), arch, seed=5, spec=spec)
            for name, (arch, spec) in SPECS.items()}


@pytest.mark.parametrize("name, workers, policy", [
    ("llama-9-3", 2, "float32"), ("llama-9-3", 3, "float32"), ("llama-9-3", 2, "quantized"),
    ("llama-9-3", 2, "int8"), ("qwen2", 2, "quantized"), ("qwen2", 3, "float32"), ("gemma3", 2, "float32"),
    ("qwen3", 2, "quantized"), ("phi3", 2, "quantized"), ("phi3", 3, "float32"),
] + [(name, workers, "float32") for name in ("llama-9-3-wide", "gemma3-wide") for workers in WORKERS]
  + [("llama-9-3-wide", 5, "quantized"), ("gemma3-wide", 8, "int8")])
def test_every_worker_computes_the_whole_models_logits(tiny_paths, name, workers, policy):
    whole = Model.from_gguf(tiny_paths[name], policy=policy)
    shards = sharded_models(tiny_paths[name], workers, policy)
    expected = whole.forward(TINY_TOKENS, 0, all_logits=True)  # a prompt crossing gemma3's window
    got = run_all(shards, TINY_TOKENS, 0, all_logits=True)
    scale = np.abs(expected).max()
    for logits in got:
        np.testing.assert_array_equal(logits, got[0])  # every worker holds the same numbers, bit for bit
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * scale)  # float32: the same sums in another order
    token = int(expected[-1].argmax())
    for step in range(4):  # then token by token from the KV cache, greedy
        expected = whole.forward([token], len(TINY_TOKENS) + step)
        got = run_all(shards, [token], len(TINY_TOKENS) + step)
        np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-5 * np.abs(expected).max())
        assert int(got[0].argmax()) == int(expected.argmax())
        token = int(expected.argmax())


@pytest.mark.parametrize("name", ["llama-9-3", "gemma3"])
def test_workers_that_all_skip_the_head_stay_in_step(tiny_paths, name):
    """logits=False in every worker (each worker's session passes the same flags for the same prompt chunks)
    skips the head's gather in all of them: the caches they fill still give the whole model's next logits."""
    whole = Model.from_gguf(tiny_paths[name], policy="float32")
    shards = sharded_models(tiny_paths[name], 2, "float32")
    assert run_all(shards, TINY_TOKENS[:8], 0, logits=False) == [None, None]
    expected = whole.forward(TINY_TOKENS, 0)
    for logits in run_all(shards, TINY_TOKENS[8:], 8):
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name, workers, policy", [
    ("llama-9-3", 3, "float32"), ("qwen2", 2, "quantized"), ("phi3", 2, "int8"), ("gemma3-wide", 5, "float32"),
])
def test_workers_apply_their_shard_of_a_lora_adapter(tiny_paths, name, workers, policy):
    """An adapter on every matrix the file has in its layers (phi3's fused ones too) and on a separate head."""
    gguf_file = GGUFFile.open(tiny_paths[name])
    rng = np.random.default_rng(2)
    pairs = {tensor: (rng.standard_normal((3, info.shape[1])).astype(np.float32),  # A [rank, in]
                      0.2 * rng.standard_normal((info.shape[0], 3)).astype(np.float32))  # B [out, rank]
             for tensor, info in gguf_file.tensors.items()
             if len(info.shape) == 2 and (tensor.startswith("blk.") or tensor == "output.weight")}
    adapter = GGUFFile(adapter_writer(gguf_file, 6.0, pairs, "random").to_bytes(), name="random.gguf")
    adapters = open_adapters(gguf_file, [(adapter, 0.5)])
    whole = Model.from_gguf(gguf_file, policy=policy)
    before = whole.forward(TINY_TOKENS, 0, all_logits=True)
    whole.set_adapters(adapters)
    expected = whole.forward(TINY_TOKENS, 0, all_logits=True)
    assert np.abs(expected - before).max() > 1e-2 * np.abs(before).max()  # the adapter matters
    shards = sharded_models(tiny_paths[name], workers, policy)
    for model in shards:
        model.set_adapters(adapters)
    for logits in run_all(shards, TINY_TOKENS, 0, all_logits=True):
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_a_worker_holds_only_its_share_of_the_weights(tiny_paths):
    whole = Model.from_gguf(tiny_paths["llama-9-3"], policy="float32")
    shards = sharded_models(tiny_paths["llama-9-3"], 2, "float32")
    assert [m.n_heads for m in shards] == [4, 5] and [m.n_kv_heads for m in shards] == [2, 2]
    layer = [m.layers[0] for m in shards]
    assert [w.wq.shape for w in layer] == [(4 * 32, 288), (5 * 32, 288)]
    assert [w.wo.shape for w in layer] == [(288, 4 * 32), (288, 5 * 32)]
    assert [w.w_down.shape[1] for w in layer] == [32, 64]  # 96 FFN units in whole blocks of 32
    assert [m.output.shape[0] for m in shards] == [48, 48]
    assert sum(m.memory_bytes() for m in shards) < 1.25 * whole.memory_bytes()


def test_columns_that_cut_a_quantization_block_are_kept_as_int8(tiny_paths):
    # qwen2's wo is Q4_0 (blocks of 32 columns); 3 workers get heads of 16 columns: 16, 16 and 32.
    shards = sharded_models(tiny_paths["qwen2"], 3, "quantized")
    assert [type(m.layers[0].wo).__name__ for m in shards] == ["Int8Matrix", "Int8Matrix", "QuantizedMatrix"]
    assert isinstance(shards[0].layers[0].wo, Int8Matrix)


def test_plans_balance_each_phase_and_refuse_what_does_not_split(tiny_paths):
    config = ModelConfig.from_gguf(GGUFFile.open(tiny_paths["llama-9-3"]))
    plans = plan_shards(config, 2)
    assert [p.heads for p in plans] == [(0, 4), (4, 9)] and [p.kv_heads for p in plans] == [(0, 2), (1, 3)]
    assert [p.ffn for p in plans] == [(0, 32), (32, 96)] and [p.vocab for p in plans] == [(0, 48), (48, 96)]
    assert max_workers(config) == 3  # 96 FFN units make 3 blocks of 32
    with pytest.raises(InvalidSettingError, match="splits into 1 to 3 workers, not 4"):
        plan_shards(config, 4)


@pytest.fixture(scope="module")
def single_worker_answers(smollm2_path, gemma3_path):
    """The single-worker engine's greedy answer to each real model's prompt: (prompt, last logits, answer ids)."""
    answers = {}
    for name, path, prompt, length in (("smollm2", smollm2_path, GOLDEN_PROMPT, len(GOLDEN_IDS)),
                                       ("gemma3", gemma3_path, GEMMA_TOKENS, 8)):
        whole = Model.from_gguf(path, policy="float32", context_length=64)
        logits = whole.forward(prompt, 0)
        answer = [int(logits.argmax())]
        while len(answer) < length:
            answer.append(int(whole.forward(answer[-1:], len(whole.cache.ids)).argmax()))
        answers[name] = (prompt, logits, answer)
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("model_name", ["smollm2", "gemma3"])
def test_real_models_split_give_the_single_workers_greedy_answer(request, single_worker_answers, model_name, workers):
    """SmolLM2 (9 heads over 3 KV heads) and Gemma 3 270M (4 heads over 1; workers past 4 hold none) split in
    2-8: the same first logits and greedy ids as the single worker, which for SmolLM2 are transformers' greedy
    answer to the golden prompt."""
    prompt, expected, answer = single_worker_answers[model_name]
    if model_name == "smollm2":
        assert answer == GOLDEN_IDS  # transformers' greedy answer (tests/oracle/test_model.py)
    shards = sharded_models(request.getfixturevalue(model_name + "_path"), workers, "float32", context_length=64)
    got = run_all(shards, prompt, 0)
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-4)
    ids = [int(got[0].argmax())]
    while len(ids) < len(answer):
        ids.append(int(run_all(shards, ids[-1:], len(prompt) + len(ids) - 1)[0].argmax()))
    assert ids == answer
