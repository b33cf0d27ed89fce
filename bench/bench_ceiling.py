"""Where native generation's time goes, and its ceiling: bytes read per token against the memory bandwidth.

    python bench/bench_ceiling.py                        # SmolLM2-135M Q4_1, float32 policy
    python bench/bench_ceiling.py MODEL.gguf --policy int8 --n-gen 32 --json

A greedy decoding step reads every stored matrix once, plus the keys and values of the positions before it.
This machine's bandwidth is measured with a numpy copy of a 256 MB array (bytes read + bytes written, per
second); bytes per token / bandwidth is the fastest a step can be when nothing else costs time: the ceiling.
Each step's time is split into the matrix products (timed inside every Matrix.matmul) and the rest: attention,
norms, RoPE, the sampler's argmax and the Python between them; the Python calls a step makes are counted too
(the per-token overhead's budget, which no load on the machine changes). The last figures compare q/k/v and gate/up
stacked (model/stacked.py) with the same model multiplying them separately, the two taking turns. Figures are
the best of --repeats runs (other work on a shared machine only ever slows a run down).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pychat_wasm.cli.common import model_path  # noqa: E402
from pychat_wasm.gguf.reader import GGUFFile  # noqa: E402
from pychat_wasm.model import matrices  # noqa: E402
from pychat_wasm.model.forward import Model  # noqa: E402
from pychat_wasm.model.stacked import StackedLayer  # noqa: E402

PROMPT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407]


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second a numpy copy moves (read + write), best of `repeats`."""
    source = np.ones(megabytes * (1 << 20) // 4, dtype=np.float32)
    target = np.empty_like(source)
    best = min(_timed(lambda: np.copyto(target, source)) for _ in range(repeats))
    return 2 * source.nbytes / best


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def bytes_per_token(model: Model, position: int) -> int:
    """What one decoding step at `position` reads: every layer matrix, the output head, one embedding row and
    the cached keys and values of the positions before it."""
    cfg = model.config
    layer_matrices = sum(m.nbytes for w in model.layers for m in (w.wq, w.wk, w.wv, w.wo, w.w_gate, w.w_up, w.w_down))
    embedding_row = model.token_embedding.row_bytes
    kv = 2 * 4 * cfg.n_layers * model.n_kv_heads * cfg.head_dim * position
    return layer_matrices + model.output.nbytes + embedding_row + kv


class ProductClock:
    """Adds up the seconds spent inside every Matrix.matmul while it is installed."""

    CLASSES = (matrices.Float32Matrix, matrices.Int8Matrix, matrices.QuantizedMatrix)

    def __init__(self):
        self.seconds = 0.0
        self.originals = {cls: cls.matmul for cls in self.CLASSES}

    def __enter__(self) -> "ProductClock":
        for cls, original in self.originals.items():
            cls.matmul = self._timed(original)
        return self

    def __exit__(self, *exc) -> None:
        for cls, original in self.originals.items():
            cls.matmul = original

    def _timed(self, original):
        def matmul(matrix, x):
            start = time.perf_counter()
            out = original(matrix, x)
            self.seconds += time.perf_counter() - start
            return out
        return matmul


def decode(model: Model, n_gen: int, during=contextlib.nullcontext()) -> float:
    """Seconds per greedy single-token step after PROMPT; the steps (not the prompt) run inside `during`."""
    logits = model.forward(PROMPT, start_pos=0)
    with during:
        start = time.perf_counter()
        for _ in range(n_gen):
            logits = model.forward([int(np.argmax(logits))], start_pos=len(model.cache.ids))
        return (time.perf_counter() - start) / n_gen


def python_calls_per_step(model: Model, n_gen: int) -> float:
    """Python-level function calls (ours, numpy's Python layer and C functions called from Python) per greedy
    step: the per-token overhead's budget, a count that no load on the machine changes."""
    calls = [0]

    def count(frame, event, arg):
        if event in ("call", "c_call"):
            calls[0] += 1

    logits = model.forward(PROMPT, start_pos=0)
    sys.setprofile(count)
    try:
        for _ in range(n_gen):
            logits = model.forward([int(np.argmax(logits))], start_pos=len(model.cache.ids))
    finally:
        sys.setprofile(None)
    return calls[0] / n_gen


def split_step(model: Model, n_gen: int) -> Dict[str, float]:
    """Seconds per step: all of it, inside the matrix products, outside them."""
    clock = ProductClock()
    step = decode(model, n_gen, clock)
    products = clock.seconds / n_gen
    return {"step": step, "products": products, "outside": step - products}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a .gguf file (default: the installed SmolLM2)")
    parser.add_argument("--policy", default="float32", help="weight policy (default %(default)s)")
    parser.add_argument("--n-gen", type=int, default=32, help="decoding steps per run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    path = model_path(args.model)
    model = Model.from_gguf(GGUFFile.open(str(path)), policy=args.policy, context_length=256)
    print("%s, %s policy, %d steps, best of %d; load average before: %.2f (a busy machine slows every figure)"
          % (path.name, args.policy, args.n_gen, args.repeats, os.getloadavg()[0]), file=sys.stderr)
    bandwidth = memory_bandwidth()
    per_token = bytes_per_token(model, len(PROMPT) + args.n_gen // 2)
    decode(model, 2)  # warm-up
    splits = [split_step(model, args.n_gen) for _ in range(args.repeats)]
    best = min(splits, key=lambda s: s["step"])
    stacked, separate = model.stacked, [StackedLayer()] * len(model.stacked)
    steps: Dict[str, List[float]] = {"stacked": [], "separate": []}
    for _ in range(args.repeats):
        for name, layers in (("separate", separate), ("stacked", stacked)):
            model.stacked = layers
            steps[name].append(decode(model, args.n_gen))
    result = dict(bandwidth_gb_s=bandwidth / 1e9, bytes_per_token_mb=per_token / 1e6,
                  ceiling_tps=bandwidth / per_token, measured_tps=1 / best["step"],
                  share_of_ceiling=(1 / best["step"]) / (bandwidth / per_token),
                  products_ms=1e3 * best["products"], outside_products_ms=1e3 * best["outside"],
                  stacked_tps=1 / min(steps["stacked"]), separate_tps=1 / min(steps["separate"]),
                  python_calls_per_step=python_calls_per_step(model, args.n_gen))
    result["stacked_ratio"] = result["stacked_tps"] / result["separate_tps"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("memory bandwidth (numpy copy, read + write): %.1f GB/s" % result["bandwidth_gb_s"])
    print("bytes read per token: %.1f MB -> ceiling %.1f tok/s; measured %.1f tok/s (%.0f%% of the ceiling)"
          % (result["bytes_per_token_mb"], result["ceiling_tps"], result["measured_tps"],
             100 * result["share_of_ceiling"]))
    print("per token: %.2f ms in matrix products, %.2f ms outside them (attention, norms, RoPE, argmax, Python)"
          % (result["products_ms"], result["outside_products_ms"]))
    print("Python calls per step (function calls, numpy's Python layer and C calls from Python): %.0f"
          % result["python_calls_per_step"])
    print("q/k/v and gate/up stacked: %.1f tok/s, separate: %.1f tok/s (%.2fx)"
          % (result["stacked_tps"], result["separate_tps"], result["stacked_ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
