"""The split across 2-8 workers (pychat_wasm/model/tensor_parallel.py plan_shards) is balanced phase by phase,
for the shapes of the two real models: SmolLM2-135M (9 query heads over 3 KV heads, 1536 FFN units, 30 layers)
and Gemma 3 270M (4 query heads over 1 KV head, 2048 FFN units).

Every phase ends where the workers meet, so what counts is each phase's heaviest worker (phase_work):
  - FFN: at most X_FFN above the mean (units of 32: SmolLM2's 48 over 5 workers are 10 or 9; Gemma's whole
    Q4_K/Q6_K blocks of 256 where their 8 share out evenly, else units of 32);
  - output head: at most one vocabulary row above the mean;
  - attention: a worker computes whole query heads (a head's scores need all of its q and k), and with GQA
    the KV heads its query heads read. The plan's heaviest worker must be as light as the best of all splits
    into consecutive whole heads (found here by exhaustive search), so no other split of heads waits less.
    What that costs against the mean is inherent to whole heads and printed in docs/browser.md.
"""
from __future__ import annotations

import itertools

import pytest

from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.config import ModelConfig
from pychat_wasm.model.tensor_parallel import FFN_UNIT, ShardPlan, ffn_block, phase_work, plan_shards

X_FFN = 0.10  # the FFN share of the heaviest worker over the mean, at most
WORKERS = range(2, 9)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request):
    gguf = GGUFFile.open(str(request.getfixturevalue(request.param + "_path")))
    return ModelConfig.from_gguf(gguf), ffn_block(gguf)


def lightest_attention_split(config, workers: int) -> int:
    """The heaviest worker's attention work in the best split of the query heads into `workers` consecutive runs
    (some may be empty), by trying every split."""
    group = config.n_heads // config.n_kv_heads
    best = None
    for cuts in itertools.combinations_with_replacement(range(config.n_heads + 1), workers - 1):
        bounds = (0,) + cuts + (config.n_heads,)
        heaviest = 0
        for first, stop in zip(bounds[:-1], bounds[1:]):
            kv = (first // group, (stop - 1) // group + 1) if stop > first else (0, 0)
            plan = ShardPlan(0, workers, (first, stop), kv, (0, 0), (0, 0))
            heaviest = max(heaviest, phase_work(config, plan)["attention"])
        best = heaviest if best is None else min(best, heaviest)
    return best


@pytest.mark.parametrize("workers", WORKERS)
def test_each_phase_is_balanced(model, workers):
    config, block = model
    plans = plan_shards(config, workers, block)
    work = [phase_work(config, plan) for plan in plans]
    mean = {phase: sum(w[phase] for w in work) / workers for phase in work[0]}
    heaviest = {phase: max(w[phase] for w in work) for phase in work[0]}
    assert heaviest["ffn"] <= (1 + X_FFN) * mean["ffn"]
    assert heaviest["head"] <= mean["head"] + config.dim
    assert heaviest["attention"] == lightest_attention_split(config, workers)


@pytest.mark.parametrize("workers", WORKERS)
def test_the_plans_cover_every_head_unit_and_row_once(model, workers):
    config, block = model
    plans = plan_shards(config, workers, block)
    for part, total in (("heads", config.n_heads), ("ffn", config.ffn_dim), ("vocab", config.vocab_size)):
        spans = [getattr(plan, part) for plan in plans]
        assert spans[0][0] == 0 and spans[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:]))  # consecutive, no gap, no overlap
    # The down matrix's columns in whole blocks where they share out evenly, else in int8's blocks of 32
    unit = block if (config.ffn_dim // block) % workers == 0 else FFN_UNIT
    assert all(plan.ffn[0] % unit == 0 for plan in plans)
    group = config.n_heads // config.n_kv_heads
    for plan in plans:  # the KV heads a worker computes are exactly those its query heads read
        read = {head // group for head in range(*plan.heads)}
        assert set(range(*plan.kv_heads)) == read


def test_gemma3_splits_past_its_four_heads(gemma3_path):
    """Workers beyond the query heads hold none: their attention adds zeros, and they share the FFN and head."""
    config = ModelConfig.from_gguf(GGUFFile.open(str(gemma3_path)))
    plans = plan_shards(config, 8)
    assert sum(plan.heads[1] > plan.heads[0] for plan in plans) == 4
    assert {plan.ffn[1] - plan.ffn[0] for plan in plans} == {256}
