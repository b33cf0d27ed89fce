"""Native speed of our engine next to llama.cpp (node-llama-cpp, CPU) on the same model and prompt ids.

    python bench/bench_native.py                          # SmolLM2-135M Q4_1, every storage policy
    python bench/bench_native.py MODEL.gguf --policies float32 --n-gen 128 --threads 2 --json

Both engines get the same token ids: a chat prompt rendered with the model's template, then greedy decoding
of a fixed number of tokens (end-of-turn tokens do not stop either side). Prompt time runs from the first
prompt token to the first sampled token; generation speed counts the single-token steps after it. Each
figure is the best of --repeats timed runs after one warm-up run (other work on a shared machine only ever
slows a run down), and llama.cpp runs both before and after our engine, keeping its better figures. Our
numpy uses as many BLAS threads as OpenBLAS picks (set OPENBLAS_NUM_THREADS to pin it); llama.cpp uses
--threads.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pychat_wasm.chat.template import ChatTemplate, encode_chat  # noqa: E402
from pychat_wasm.cli.common import model_path  # noqa: E402
from pychat_wasm.gguf.reader import GGUFFile  # noqa: E402
from pychat_wasm.model.forward import Model  # noqa: E402
from pychat_wasm.tokenizers import load_tokenizer  # noqa: E402
from pychat_wasm.model.matrices import POLICIES  # noqa: E402

NODE_SCRIPT = REPO / "bench" / "llama_cpp_bench.mjs"
USER_MESSAGE = (
    "I am planning a three-day trip to Lisbon in early spring with two friends who love food, history and "
    "long walks. We arrive on a Thursday morning by train and leave on Sunday evening. Please suggest a plan "
    "for each day with one museum, one neighbourhood to explore on foot, a place for lunch and an idea for "
    "the evening, and tell us which public transport tickets we should buy.")


def prompt_ids(gguf: GGUFFile) -> List[int]:
    tokenizer = load_tokenizer(gguf)
    template = ChatTemplate.from_gguf(gguf, tokenizer)
    return encode_chat(tokenizer, template.render([{"role": "user", "content": USER_MESSAGE}]))


def time_ours(model: Model, ids: List[int], n_gen: int) -> Dict[str, object]:
    """One greedy run: (prompt seconds, generation seconds, tokens)."""
    start = time.perf_counter()
    tokens = [int(np.argmax(model.forward(ids, start_pos=0)))]
    first = time.perf_counter()
    for _ in range(n_gen - 1):
        logits = model.forward(tokens[-1:], start_pos=len(ids) + len(tokens) - 1)  # [vocab]
        tokens.append(int(np.argmax(logits)))
    end = time.perf_counter()
    return {"prompt_seconds": first - start, "generation_seconds": end - first, "tokens": tokens}


def bench_ours(gguf: GGUFFile, policy: str, ids: List[int], n_gen: int, repeats: int) -> Dict[str, object]:
    start = time.perf_counter()
    model = Model.from_gguf(gguf, policy=policy, context_length=len(ids) + n_gen + 16)
    load_seconds = time.perf_counter() - start
    time_ours(model, ids, min(n_gen, 4))  # warm-up
    runs = [time_ours(model, ids, n_gen) for _ in range(repeats)]
    return summarize("pychat-wasm", policy, ids, runs, load_seconds=load_seconds)


def bench_llama_cpp(path: Path, ids: List[int], n_gen: int, threads: int, repeats: int) -> Dict[str, object]:
    """Run bench/llama_cpp_bench.mjs (needs `npm install` in the repository for node-llama-cpp)."""
    out = subprocess.run(["node", str(NODE_SCRIPT), str(path), json.dumps(ids), str(n_gen), str(threads),
                          str(repeats)], cwd=str(REPO), capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    runs = [dict(run, tokens=result["tokens"]) for run in result["runs"]]
    return summarize("llama.cpp", "%d threads" % result["threads"], ids, runs)


def summarize(engine: str, policy: str, ids: List[int], runs: List[Dict[str, object]], **extra) -> Dict[str, object]:
    prompt_s = min(r["prompt_seconds"] for r in runs)
    gen_s = min(r["generation_seconds"] for r in runs)
    n_gen = len(runs[0]["tokens"]) - 1  # single-token steps after the first sampled token
    return dict(engine=engine, policy=policy, prompt_tokens=len(ids), prompt_tps=len(ids) / prompt_s,
                generated_tokens=n_gen, generation_tps=n_gen / gen_s, tokens=runs[0]["tokens"], **extra)


def same_prefix(a: List[int], b: List[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def print_table(results: List[Dict[str, object]], reference: Dict[str, object]) -> None:
    print("%-12s %-10s %12s %12s %10s %10s %8s" % ("engine", "policy", "prompt t/s", "gen t/s",
                                                  "prompt %", "gen %", "greedy="))
    for r in results + [reference]:
        print("%-12s %-10s %12.1f %12.1f %9.1f%% %9.1f%% %8s" % (
            r["engine"], r["policy"], r["prompt_tps"], r["generation_tps"],
            100 * r["prompt_tps"] / reference["prompt_tps"], 100 * r["generation_tps"] / reference["generation_tps"],
            "%d/%d" % (same_prefix(r["tokens"], reference["tokens"]), len(reference["tokens"]))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a .gguf file (default: the installed SmolLM2)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated (default %(default)s)")
    parser.add_argument("--n-gen", type=int, default=64, help="tokens to generate (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    path = model_path(args.model)
    gguf = GGUFFile.open(str(path))
    ids = prompt_ids(gguf)
    print("%s: %d prompt tokens, %d generated, best of %d runs; load average before: %.2f (other work on the "
          "machine skews both engines)" % (path.name, len(ids), args.n_gen, args.repeats, os.getloadavg()[0]),
          file=sys.stderr)
    before = bench_llama_cpp(path, ids, args.n_gen, args.threads, args.repeats)
    results = [bench_ours(gguf, policy, ids, args.n_gen, args.repeats) for policy in args.policies.split(",")]
    after = bench_llama_cpp(path, ids, args.n_gen, args.threads, args.repeats)
    reference = dict(before, prompt_tps=max(before["prompt_tps"], after["prompt_tps"]),
                     generation_tps=max(before["generation_tps"], after["generation_tps"]))
    if args.json:
        print(json.dumps({"ours": results, "llama_cpp": reference}, indent=2))
    else:
        print_table(results, reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
