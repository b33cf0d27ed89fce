"""Inside Pyodide (bench/tp_scaling.mjs runs it in Node's worker threads): one worker's part of a split model,
timed term by term, for the scaling model in docs/browser.md ("Several workers per token").

    load(path, workers, rank, js, stacked)   this worker's shard; js: web/tensor_parallel.js's collective, or None
                                    to run the shard alone (its sums do nothing: its compute time, with no
                                    waiting); stacked=False: q/k/v and gate/up multiplied separately
    decode(prompt, ids, n)          prefill `prompt`, then feed `ids` one token at a time (the single-worker
                                    engine's greedy answer, so every run computes the same tokens; None: its
                                    own greedy tokens, n of them); returns
                                    per-token milliseconds split into products, collective calls and the rest
                                    (and the cycle collector's pauses within it),
                                    and the greedy ids this worker's logits give
    call_cost(calls)                milliseconds per sum of one token's [1, dim] vector with no work between
                                    (median and fastest)
    op_cost(calls)                  microseconds per small numpy op (x + y on [1, dim]) and per bare JS call
"""
from __future__ import annotations

import gc
import json
import time

import numpy as np

from pychat_wasm.browser.chat_worker import SharedMemoryCollective
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model import matrices
from pychat_wasm.model.forward import Model
from pychat_wasm.model.stacked import StackedLayer
from pychat_wasm.model.tensor_parallel import Collective

clock = time.perf_counter
spent = {"products": 0.0, "collective": 0.0, "gc": 0.0}
state = {}


def _gc_timer(phase, info, started=[0.0]):
    """Python's cycle collector pauses one worker at a time, and the others wait for it at the next sum."""
    if phase == "start":
        started[0] = clock()
    else:
        spent["gc"] += clock() - started[0]


gc.callbacks.append(_gc_timer)


def _timed(function, term):
    def timed(*args):
        start = clock()
        try:
            return function(*args)
        finally:
            spent[term] += clock() - start
    return timed


for _cls in (matrices.QuantizedMatrix, matrices.Int8Matrix, matrices.Float32Matrix):
    _cls.matmul = _timed(_cls.matmul, "products")


class AloneCollective(Collective):
    """A shard run by itself: the sums leave its partial products as they are (the logits are wrong, the time is
    its compute's), the gather puts its slice in place."""

    def __init__(self, rank, workers):
        self.rank, self.workers = rank, workers

    def sum_(self, x):
        pass

    def gather(self, part, out, start):
        out[start:start + part.size] = part


class TimedCollective(Collective):
    def __init__(self, inner):
        self.inner, self.rank, self.workers = inner, inner.rank, inner.workers
        self.sum_ = _timed(inner.sum_, "collective")
        self.gather = _timed(inner.gather, "collective")


def load(path, workers, rank, js=None, stacked=True, context_length=512):
    data = np.fromfile(path, dtype=np.uint8)
    inner = (SharedMemoryCollective(js, rank, workers) if js is not None else AloneCollective(rank, workers)) \
        if workers > 1 else None
    collective = TimedCollective(inner) if inner else None
    state["model"] = Model.from_gguf(GGUFFile(data, name=path), policy="auto", context_length=context_length,
                                     workers=workers, rank=rank, collective=collective)
    if not stacked:  # q, k, v and gate, up as separate products (how a worker ran them before)
        state["model"].stacked = [StackedLayer()] * len(state["model"].layers)
    return json.dumps({"policy": state["model"].policy, "heads": state["model"].n_heads,
                       "kv_heads": state["model"].n_kv_heads})


def _forward(model, tokens, start_pos):
    """Model.forward without its checks: a shard run alone (its sums skipped) may overflow to inf, at the same
    cost per token."""
    hidden = list(model._batches(np.asarray(tokens, dtype=np.int64), start_pos))[-1]  # [n, dim]
    return model._vocab_logits(hidden[-1:])[0]  # [vocab]


def decode(prompt_json, ids_json, n):
    model, prompt, ids = state["model"], json.loads(prompt_json), json.loads(ids_json)
    logits = _forward(model, prompt, 0)
    greedy, rows = [int(logits.argmax())], []
    for step in range(n if ids is None else len(ids)):
        token = greedy[-1] if ids is None else ids[step]
        spent["products"] = spent["collective"] = spent["gc"] = 0.0
        start = clock()
        logits = _forward(model, [token], len(prompt) + step)
        greedy.append(int(logits.argmax()))  # the sampler's greedy path is an argmax too
        total = clock() - start
        rows.append([1000 * total, 1000 * spent["products"], 1000 * spent["collective"], 1000 * spent["gc"]])
    return json.dumps({"greedy": greedy, "per_token": rows})


def call_cost(calls):
    """Milliseconds per sum of one token's [1, dim] vector with no work between calls: median and fastest."""
    x = np.ones((1, state["model"].config.dim), np.float32)  # [1, dim]: one token's partial product
    sum_, times = state["model"].collective.inner.sum_, []
    for _ in range(calls):
        start = clock()
        sum_(x)
        times.append(clock() - start)
    times.sort()
    return json.dumps({"median_ms": 1000 * times[len(times) // 2], "best_ms": 1000 * times[0]})


def op_cost(calls, js_noop):
    x = np.ones((1, state["model"].config.dim), np.float32)
    start = clock()
    for _ in range(calls):
        x + x
    numpy_op = clock() - start
    start = clock()
    for _ in range(calls):
        js_noop(0, 0)
    js_call = clock() - start
    return json.dumps({"numpy_op_us": 1e6 * numpy_op / calls, "js_call_us": 1e6 * js_call / calls})
