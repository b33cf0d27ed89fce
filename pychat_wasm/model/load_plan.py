"""Load once, check once, decide once: everything known about a model before its weights are built.

`plan_model` reads a GGUF file and decides, in an order that rejects a bad file before anything big is
allocated (so a rejected file leaves a loaded model as it was):

    tensor types    every one decodable (UnsupportedQuantTypeError)
    config          ModelConfig.from_gguf: architecture, hyperparameters, the chosen context
    tensors         check_model: every tensor present, shaped as the metadata says, finite (one pass)
    shards          how many workers the model splits into (at most as many as asked) and this worker's part
    weight policy   the one asked for, or for "auto" the rule below

The CLI (ChatSession.from_gguf), the browser's chat worker (load_model), replay and fine-tuning plan a load
here (a chat's through chat/load.plan_load, which adds the tokenizer and the chat template); Model.from_plan
builds it without parsing or checking anything again. The fit check (fit_check.py) sizes the
same figures from the header alone, before a download.

The weight policy rule ("auto"): the fastest policy (float32, then int8, then quantized) whose figures for
this worker's part of the model fit the one heap figure, fit_check.MODEL_HEAP (Pyodide's 4 GiB heap less what
Python keeps): the GGUF file (the browser holds it in the heap) + the weights the load allocates + the KV
cache at the chosen context, with no array of 2 GiB or more -- the fit check's verdict "fits". For a whole
model that is the fit check's `best` at that context; a worker of a split model holds less of it, so it never
gets a slower policy than one worker would. If no policy fits, "quantized" (the least memory).

    >>> plan = plan_model(GGUFFile.open("SmolLM2-135M-Instruct.Q4_1.gguf"), context_length=2048)  # doctest: +SKIP
    >>> plan.policy, plan.config.context_length                                                 # doctest: +SKIP
    ('float32', 2048)
    >>> model = Model.from_plan(plan)                                                           # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ..errors import InvalidSettingError
from ..gguf.quants import block_format
from ..gguf.reader import GGUFFile
from .check import check_model
from .fit_check import MODEL_HEAP, fastest_fitting, policy_rows
from .config import ModelConfig
from .matrices import POLICIES
from .tensor_parallel import ShardPlan, ffn_block, max_workers, plan_shards


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """A checked model file and what its load will build."""

    gguf: GGUFFile
    config: ModelConfig
    workers: int  # how many workers the model is split into (1: one holds it whole)
    rank: int  # this worker's place among them; rank >= workers: it holds nothing
    shard: Optional[ShardPlan]  # this worker's part of a split model; None: the whole model (or nothing)
    policy: str  # how the weights are kept (matrices.POLICIES); "" for a worker that holds nothing
    tokenizer: Any = None  # with chat/load.plan_load: the Tokenizer
    template: Any = None  # with chat/load.plan_load: the ChatTemplate

    @property
    def idle(self) -> bool:
        """This worker is beyond the workers the model splits into: it loads nothing."""
        return self.rank >= self.workers

    def shortened(self, context_length: int) -> "LoadPlan":
        """The same load with a KV cache of at most `context_length` positions: nothing to check or choose
        again, since a shorter context needs less memory than the one the policy was chosen for."""
        config = dataclasses.replace(self.config, context_length=min(context_length, self.config.context_length))
        return dataclasses.replace(self, config=config)


def check_supported(gguf: GGUFFile) -> None:
    """Raise UnsupportedQuantTypeError for a tensor type the engine cannot decode, before loading anything."""
    for type_id in sorted({info.type_id for info in gguf.tensors.values()}):
        block_format(type_id)


def plan_model(gguf: GGUFFile, context_length: Optional[int] = None, policy: str = "auto",
               memory_limit: int = MODEL_HEAP, workers: int = 1, rank: int = 0) -> LoadPlan:
    """Check `gguf` and decide its load: context (default: the engine's), workers, this worker's shard and the
    weight policy ("auto": the rule in the module docstring, against `memory_limit`)."""
    if policy != "auto" and policy not in POLICIES:
        raise InvalidSettingError("unknown weight policy %r: choose one of auto, %s" % (policy, ", ".join(POLICIES)))
    check_supported(gguf)
    config = ModelConfig.from_gguf(gguf, context_length)  # the one parse; InvalidSettingError for a bad context
    check_model(gguf, config)  # InvalidModelError: missing or misshapen tensors, NaN weights, ...
    block = ffn_block(gguf)
    workers = max(1, min(int(workers), max_workers(config, block)))
    if rank >= workers:
        return LoadPlan(gguf, config, workers, rank, None, "")
    shard = plan_shards(config, workers, block)[rank] if workers > 1 else None
    if policy == "auto":
        policy = fastest_fitting(policy_rows(gguf, config, memory_limit, shard)) or "quantized"
    return LoadPlan(gguf, config, workers, rank, shard, policy)

