"""llama.cpp (node-llama-cpp's context `lora` option, tests/support/llama_cpp_greedy.mjs) loads our LoRA adapter
files (pychat_wasm/model/lora.py) and computes what our engine computes with them, and what our merged export does.

    1. a tiny llama dequantized to F32 (llama.cpp then computes in float32 like us), our adapter at scale 0.5:
       llama.cpp's logits within 1e-4 of ours and of our merged F32 export's, the same greedy tokens
    2. SmolLM2's Q4_1 file with our rank-8 adapter: llama.cpp's greedy tokens = ours = llama.cpp's on our merged
       Q8_0 export, wherever no 8-bit near-tie intervenes
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pychat_wasm.chat.load import plan_load
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.forward import Model
from pychat_wasm.model.lora import open_adapters
from pychat_wasm.train.data import TrainingData
from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings

from llama_cpp_oracle import llama_cpp_results
from lora_runs import random_adapter_run
from tiny_models import TINY_TOKENS, write_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:unknown pre-tokenizer:UserWarning")]

LOGIT_TOL = 1e-4


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def llama_cpp(model: Path, vocab_size: int, jobs: list, lora=()) -> list:
    """llama.cpp on `model` with [(adapter path, scale)] in the context's `lora`."""
    adapters = [{"filePath": str(path), "scale": scale} for path, scale in lora] or None
    return llama_cpp_results(model, jobs, timeout=600, vocab_size=vocab_size, lora=adapters)


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


# ----------------------------------------------------------------------------------------------
# A tiny F32 base


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
# SmolLM2

SMOLLM2_PROMPTS = ["What is the capital of France?", "Give me three tips for sleeping well.",
                   "Write a haiku about the sea.", "What is 12 times 7?"]
GREEDY_TOKENS = 32
# llama.cpp multiplies Q4_1 and Q8_0 weights with activations rounded to 8 bits, and the merged Q8_0 export rounds
# the weights to 8 bits: its best token differed from ours where our best two logits were up to 0.18 apart
# (measured on these prompts). Where they are TIE or more apart, the best token must be the same.
TIE = 0.5


def test_llama_cpp_gives_our_greedy_tokens_with_our_smollm2_adapter(smollm2_path, tmp_path):
    """Our adapter (rank 8 on attention, B random) on the Q4_1 file, greedy: llama.cpp with the adapter in its
    context, and on our merged Q8_0 export, picks our token after every prefix of our answer where no near-tie
    intervenes, and writes our answer up to the first near-tie; without the adapter it writes another."""
    chats = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]
    run = FinetuneRun(FinetuneSettings(targets="attn"), GGUFFile.open(str(smollm2_path)), TrainingData([], chats))
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
