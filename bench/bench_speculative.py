"""Speculative decoding's speed-up (pychat_wasm/chat/speculative.py): the same greedy answers with and without
prompt-lookup drafts, in the same run.

    python bench/bench_speculative.py                          # SmolLM2-135M Q4_1, float32 policy
    python bench/bench_speculative.py MODEL.gguf --max-tokens 128 --repeats 3 --json

Four chat requests: two copy-heavy (rewrite a paragraph, fix a piece of code) and two plain questions. Each is
answered greedily (temperature 0, no repeat penalty) with and without speculation, the two taking turns;
generation tokens/s is the best of --repeats runs each (other work on a shared machine only ever slows a run
down). The prompt is in the KV cache after the first run, so the runs time the token loop. The answers must be
the same text; the ratio is with / without (targets: >= 1.6 copy-heavy, >= 0.97 plain).

Then what a draft's check costs: one forward pass over 1, 2, 3, 5 and 8 tokens after the prompt (what checking
a draft of 0, 1, 2, 4 and 7 tokens takes), with few-row products band by band (model/products.py) and with
BLAS's own product, the two taking turns, best of --repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pychat_wasm.chat.sampler import SamplingSettings  # noqa: E402
from pychat_wasm.chat.session import ChatSession  # noqa: E402
from pychat_wasm.chat.speculative import PromptLookup  # noqa: E402
from pychat_wasm.cli.common import model_path  # noqa: E402
from pychat_wasm.gguf.reader import GGUFFile  # noqa: E402
from pychat_wasm.model import products  # noqa: E402

PARAGRAPH = ("The old lighthouse stood at the edge of the cliff for more than a century. Every night its keeper "
             "climbed the narrow spiral stairs to light the lamp, and every morning he wrote the weather in a "
             "leather book. Ships passing the rocky coast relied on its beam to find the harbour safely, and the "
             "fishermen of the village said that no storm had ever put it out.")
CODE = ("def average(values):\n    total = 0\n    for value in values:\n        total =+ value\n"
        "    return total / len(values) if values else 0\n\n\ndef largest(values):\n    best = values[0]\n"
        "    for value in values:\n        if value > best:\n            best = value\n    return best\n")
REQUESTS = [
    ("copy", "rewrite", "Rewrite this paragraph with British spelling and nothing else changed:\n\n" + PARAGRAPH),
    ("copy", "fix code", "Fix the bug in this Python code and show the whole corrected code:\n\n" + CODE),
    ("plain", "question", "What is the capital of France? Answer in two sentences."),
    ("plain", "advice", "Give me three tips for sleeping better, one sentence each."),
]


def timed_answer(session: ChatSession, request: str, max_tokens: int) -> Dict[str, object]:
    settings = SamplingSettings(temperature=0, repeat_penalty=1.0, max_tokens=max_tokens)
    done = list(session.reply([{"role": "user", "content": request}], settings))[-1]
    return {"text": done.text, "tokens": done.stats.generated_tokens, "seconds": done.stats.generation_seconds,
            "drafted": done.stats.draft_tokens, "accepted": done.stats.draft_accepted}


def bench_request(session: ChatSession, request: str, max_tokens: int, repeats: int) -> Dict[str, object]:
    runs: Dict[bool, List[Dict[str, object]]] = {True: [], False: []}
    for _ in range(repeats):
        for speculative in (False, True):
            session.speculative = PromptLookup() if speculative else None
            runs[speculative].append(timed_answer(session, request, max_tokens))
    texts = {run["text"] for both in runs.values() for run in both}
    tps = {key: max(r["tokens"] / r["seconds"] for r in value) for key, value in runs.items()}
    drafted, accepted = runs[True][0]["drafted"], runs[True][0]["accepted"]
    return dict(tokens=runs[True][0]["tokens"], plain_tps=tps[False], speculative_tps=tps[True],
                ratio=tps[True] / tps[False], same_text=len(texts) == 1, drafted=drafted,
                kept=accepted / max(1, drafted))


PASS_TOKENS = (1, 2, 3, 5, 8)


def pass_costs(session: ChatSession, repeats: int) -> Dict[str, Dict[int, float]]:
    """Milliseconds of one forward pass over n tokens after a 64-token prompt, for n in PASS_TOKENS: with
    few-row products band by band ("banded") and without ("blas"), best of `repeats`."""
    model, few_rows = session.model, products.FEW_ROWS
    model.forward(list(range(100, 164)), start_pos=0, logits=False)
    costs: Dict[str, Dict[int, float]] = {"banded": {}, "blas": {}}
    try:
        for _ in range(repeats):
            for name, rows in (("blas", 1), ("banded", few_rows)):
                products.FEW_ROWS = rows
                for n in PASS_TOKENS:
                    start = time.perf_counter()
                    model.forward([5] * n, start_pos=64, all_logits=True)  # [n, vocab]
                    seconds = time.perf_counter() - start
                    costs[name][n] = min(costs[name].get(n, seconds), seconds)
    finally:
        products.FEW_ROWS = few_rows
    return {name: {n: 1e3 * s for n, s in by_n.items()} for name, by_n in costs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a .gguf file (default: the installed SmolLM2)")
    parser.add_argument("--policy", default="float32", help="weight policy (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=96, help="longest answer (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    path = model_path(args.model)
    session = ChatSession.from_gguf(GGUFFile.open(str(path)), policy=args.policy, context_length=1024)
    print("%s, %s policy, greedy answers of up to %d tokens, best of %d; load average before: %.2f (a busy "
          "machine skews both modes)" % (path.name, args.policy, args.max_tokens, args.repeats, os.getloadavg()[0]),
          file=sys.stderr)
    results = []
    for kind, name, request in REQUESTS:
        results.append(dict(kind=kind, name=name, **bench_request(session, request, args.max_tokens, args.repeats)))
    costs = pass_costs(session, args.repeats)
    if args.json:
        print(json.dumps({"requests": results, "pass_ms": costs}, indent=2))
        return 0
    print("%-6s %-10s %7s %12s %12s %7s %8s %6s %10s" % ("kind", "request", "tokens", "plain t/s", "spec t/s",
                                                          "ratio", "drafted", "kept", "same text"))
    for r in results:
        print("%-6s %-10s %7d %12.1f %12.1f %6.2fx %8d %5.0f%% %10s" % (
            r["kind"], r["name"], r["tokens"], r["plain_tps"], r["speculative_tps"], r["ratio"], r["drafted"],
            100 * r["kept"], r["same_text"]))
    print("one pass over n tokens, ms (n - 1 draft tokens checked):")
    for name, by_n in costs.items():
        print("  %-7s %s" % (name, "  ".join("%d: %.1f (%.2fx)" % (n, ms, ms / by_n[1]) for n, ms in by_n.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
