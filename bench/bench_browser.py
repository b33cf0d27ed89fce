"""Benchmark the in-browser chat in Chromium, next to wllama (llama.cpp in wasm) on the same model.

Measures, in one Chromium run on 127.0.0.1 (served with COOP/COEP, so the page is cross-origin isolated):
  - pychat-wasm with 1 worker and with N workers splitting each token (--workers, default 1 and 2): time to
    ready on a first visit (download + Python + model load) and on a cached visit (service worker + IndexedDB
    + the Python snapshot, which the benchmark waits for before its first reload), each with its phases as
    the page shows them (web/startup_timeline.js; the median of each phase over the cached visits), time to
    first token, prompt and generation speed for the golden prompt, and generation speed on a longer greedy
    answer;
  - wllama 3.8.1 (npm @wllama/wllama) with 1 thread and with N threads: model load, time to first token,
    prompt and generation speed on the same prompts, rendered with the same chat template.
The summary gives the ratios (same run) and projects 4 workers from the measured 1 -> 2 scaling.

    $ python bench/bench_browser.py [--runs 2] [--long-tokens 64] [--workers 1 2] [--json results.json]
    $ python bench/bench_browser.py --startup-only --runs 3     # the time to ready and its phases only, each
                                                               # cached start also without the Python snapshot

Needs the built site (python build/build_site.py) and node_modules (scripts/setup.sh). Not a test:
figures depend on the machine; the target is >= 2 tokens/s generation for SmolLM2-135M.
"""
from __future__ import annotations

import argparse
import json
import posixpath
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # conftest: the Chromium the tests use
sys.path.insert(0, str(REPO / "tests" / "support"))

from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from e2e_helpers import SiteServer, ask, load_build_module, python_snapshot, set_settings, wait_ready  # noqa: E402

serve = load_build_module("serve")
SITE = REPO / "dist" / "site"
MOUNTS = {"/wllama/": REPO / "node_modules" / "@wllama" / "wllama" / "esm", "/bench/": REPO / "bench"}
GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
LONG_QUESTION = "Write a short story about a robot who learns to paint."
TIMEOUT_MS = 300_000
GREEDY = dict(temperature=0, repeat_penalty=1, seed=None)

# Deletes the saved Python snapshot (web/python_snapshot.js): the next start boots Python as without one.
FORGET_SNAPSHOT = """() => new Promise((resolve) => {
  const request = indexedDB.deleteDatabase("pychat-python");
  request.onsuccess = request.onerror = request.onblocked = () => resolve();
})"""

# Records when the page first shows data-phase=ready, in ms since navigation start.
READY_RECORDER = """
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  new MutationObserver(() => {
    if (status.dataset.phase === "ready" && window.__readyAt === undefined) window.__readyAt = performance.now();
  }).observe(status, {attributes: true});
});
"""


class BenchHandler(serve.SiteHandler):
    """The site, plus wllama's files under /wllama/ and the bench page under /bench/."""

    def translate_path(self, path):
        clean = posixpath.normpath(path.split("?", 1)[0])
        for prefix, root in MOUNTS.items():
            if clean.startswith(prefix):
                return str(root / clean[len(prefix):])
        return super().translate_path(path)

    def content_security_policy(self, name):
        """The app keeps its policy; wllama (workers from blob: URLs) and the bench page run without one."""
        return None if self.path.startswith(tuple(MOUNTS)) else super().content_security_policy(name)

    def log_message(self, format, *args):  # noqa: A002
        pass


def rendered_prompt(model_path: Path, question: str) -> str:
    """The golden prompt as text, through our chat template (what both engines tokenize)."""
    from pychat_wasm.chat.template import ChatTemplate
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.tokenizers import load_tokenizer

    gguf = GGUFFile.open(str(model_path))
    tokenizer = load_tokenizer(gguf)
    return ChatTemplate.from_gguf(gguf, tokenizer).render([{"role": "user", "content": question}])


def parse_stats(line: str) -> dict:
    """'8 tokens · 3.8 tok/s · first token 7.85 s · prompt 42 new + 0 cached tokens' -> numbers (the prompt
    speed: new prompt tokens over the time to the first token)."""
    tokens, tps = re.match(r"(\d+) tokens · ([\d.]+) tok/s", line).groups()
    first = re.search(r"first token ([\d.]+) s", line)
    prompt = re.search(r"prompt (\d+) new", line)
    stats = {"tokens": int(tokens), "tokens_per_second": float(tps),
             "first_token_seconds": float(first.group(1)) if first else None}
    if first and prompt:
        stats["prompt_tokens_per_second"] = round(int(prompt.group(1)) / float(first.group(1)), 2)
    return stats


def bench_pychat(browser, url: str, runs: int, long_tokens: int, workers: int,
                 startup_only: bool = False) -> dict:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.add_init_script(READY_RECORDER)
    page.add_init_script("localStorage.setItem('pychat.workers', JSON.stringify(%d))" % workers)
    results = {"workers": workers, "ready_cold_seconds": None, "ready_cached_seconds": [], "golden": [],
               "long": None, "startup_cached": [], "ready_cached_no_snapshot_seconds": [],
               "startup_cached_no_snapshot": []}
    page.goto(url)
    wait_ready(page, TIMEOUT_MS)
    results["status"] = page.text_content("#status")
    results["ready_cold_seconds"] = page.evaluate("window.__readyAt") / 1000
    results["startup_cold"] = page.evaluate("pychat.startup")
    results["python_snapshot_bytes"] = (python_snapshot(page) or {}).get("size")  # saved after the first load
    for run in range(runs):
        if startup_only:  # the same cached start without the snapshot, for its gain in this run
            page.evaluate(FORGET_SNAPSHOT)
            page.reload()
            wait_ready(page, TIMEOUT_MS)
            results["ready_cached_no_snapshot_seconds"].append(page.evaluate("window.__readyAt") / 1000)
            results["startup_cached_no_snapshot"].append(page.evaluate("pychat.startup"))
            python_snapshot(page)  # saved again
        if not startup_only:
            set_settings(page, max_tokens=16, **GREEDY)
            page.click("#new-chat")  # the question on its own; a fresh worker: the whole prompt is new
            answer, stats = ask(page, GOLDEN_QUESTION, TIMEOUT_MS)
            results["golden"].append(dict(parse_stats(stats), answer=answer))
        page.reload()
        wait_ready(page, TIMEOUT_MS)
        results["ready_cached_seconds"].append(page.evaluate("window.__readyAt") / 1000)
        results["startup_cached"].append(page.evaluate("pychat.startup"))
    if startup_only:
        context.close()
        return results
    set_settings(page, max_tokens=long_tokens, **GREEDY)
    page.click("#new-chat")
    answer, stats = ask(page, LONG_QUESTION, TIMEOUT_MS)
    results["long"] = dict(parse_stats(stats), answer=answer)
    context.close()
    return results


def bench_wllama(browser, url: str, model_url: str, prompts: dict, runs: int, long_tokens: int,
                 threads: int) -> dict:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url + "bench/wllama_bench.html")
    page.wait_for_function("window.wllamaBenchReady === true")
    load = page.evaluate("a => wllamaBench.load(a)", {"modelURL": url + model_url, "nThreads": threads})
    results = {"threads": load["threads"], "load_seconds": load["seconds"], "golden": [], "long": None}
    for run in range(runs):
        # A different prefix each run would be needed to defeat llama.cpp's prompt cache; report its cache_n.
        results["golden"].append(page.evaluate("a => wllamaBench.complete(a)",
                                               {"prompt": prompts["golden"], "maxTokens": 16}))
    results["long"] = page.evaluate("a => wllamaBench.complete(a)", {"prompt": prompts["long"], "maxTokens": long_tokens})
    context.close()
    return results


def median_phases(reports: list, part: str = "phases") -> dict:
    """{phase name: median seconds} over start-up reports (pychat.startup), in the order they first appear; a
    phase missing from a report counts as 0 there."""
    names = list(dict.fromkeys(p["name"] for report in reports for p in report[part]))
    seconds = [{p["name"]: p["seconds"] for p in report[part]} for report in reports]
    return {name: round(statistics.median(s.get(name, 0) for s in seconds), 3) for name in names}


def summarize_startup(ours: dict) -> dict:
    cached = ours["startup_cached"]
    return {
        "status": ours["status"],
        "ready_cold_s": round(ours["ready_cold_seconds"], 2),
        "ready_cached_s": round(statistics.median(ours["ready_cached_seconds"]), 2),
        "ready_cached_all_s": [round(s, 2) for s in ours["ready_cached_seconds"]],
        "python_snapshot_bytes": ours["python_snapshot_bytes"],
        "cold_phases": median_phases([ours["startup_cold"]]),
        "cached_phases": median_phases(cached),
        "cached_alongside": median_phases(cached, "alongside"),
        **({"ready_cached_no_snapshot_s": round(statistics.median(ours["ready_cached_no_snapshot_seconds"]), 2),
            "ready_cached_no_snapshot_all_s": [round(s, 2) for s in ours["ready_cached_no_snapshot_seconds"]],
            "cached_no_snapshot_phases": median_phases(ours["startup_cached_no_snapshot"])}
           if ours["startup_cached_no_snapshot"] else {}),
    }


def summarize_pychat(ours: dict) -> dict:
    golden = ours["golden"]
    return {
        **summarize_startup(ours),
        "golden_first_token_s": round(statistics.median(g["first_token_seconds"] for g in golden), 2),
        "golden_prompt_tok_s": round(statistics.median(g["prompt_tokens_per_second"] for g in golden), 2),
        "golden_generation_tok_s": round(statistics.median(g["tokens_per_second"] for g in golden), 2),
        "long_generation_tok_s": ours["long"]["tokens_per_second"],
        "golden_answer": golden[0]["answer"],
        "long_answer": ours["long"]["answer"],
    }


def summarize_wllama(theirs: dict) -> dict:
    first = theirs["golden"][0]
    long_timings = theirs["long"]["timings"] or {}
    return {
        "threads": theirs["threads"],
        "load_s": round(theirs["load_seconds"], 2),
        "golden_first_token_s": round(first["firstTokenSeconds"], 2),
        "golden_prompt_tokens": first["timings"] and first["timings"]["prompt_n"],
        "golden_prompt_tok_s": first["timings"] and round(first["timings"]["prompt_per_second"], 2),
        "golden_answer": first["text"],
        "long_generation_tok_s": long_timings.get("predicted_per_second") and round(long_timings["predicted_per_second"], 2),
    }


def ratios(pychat: dict, wllama: dict) -> dict:
    """Generation speed (the longer answer) as ratios within this run, and 4 workers projected from 1 -> 2:
    Amdahl's law with the parallel share p that makes 1 -> 2 workers give the measured speed-up."""
    gen = {"pychat_%dw" % w: s["long_generation_tok_s"] for w, s in pychat.items()}
    gen.update({"wllama_%dt" % t: s["long_generation_tok_s"] for t, s in wllama.items()})
    out = {"generation_tok_s": gen}
    best = max(pychat)
    for threads in sorted(wllama):
        if gen.get("wllama_%dt" % threads):
            out["pychat_%dw_over_wllama_%dt" % (best, threads)] = round(gen["pychat_%dw" % best] / gen["wllama_%dt" % threads], 2)
    if 1 in pychat and 2 in pychat:
        speedup = gen["pychat_2w"] / gen["pychat_1w"]
        parallel = min(1.0, max(0.0, 2 * (1 - 1 / speedup)))
        out["pychat_speedup_1_to_2_workers"] = round(speedup, 2)
        out["pychat_projected_4w_tok_s"] = round(gen["pychat_1w"] / ((1 - parallel) + parallel / 4), 2)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark pychat-wasm and wllama in Chromium")
    parser.add_argument("--runs", type=int, default=2, help="golden-prompt runs (each after a reload)")
    parser.add_argument("--long-tokens", type=int, default=64, help="tokens of the longer greedy answer")
    parser.add_argument("--json", type=Path, help="also write all raw figures here")
    parser.add_argument("--site", type=Path, default=SITE, help="the built site (e.g. an older build, to compare)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="pychat-wasm workers per token and wllama threads to measure")
    parser.add_argument("--startup-only", action="store_true",
                        help="only the time to ready and its phases (no answers, no wllama)")
    args = parser.parse_args(argv)
    if not (args.site / "manifest.json").exists():
        raise SystemExit("%s is missing: run `python build/build_site.py` first" % args.site)
    manifest = json.loads((args.site / "manifest.json").read_text())
    model_path = args.site / manifest["model"]["url"]
    prompts = {"golden": rendered_prompt(model_path, GOLDEN_QUESTION), "long": rendered_prompt(model_path, LONG_QUESTION)}

    from playwright.sync_api import sync_playwright

    server = SiteServer(args.site, BenchHandler)
    url = server.url
    started = time.time()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ours = {n: bench_pychat(browser, url, args.runs, args.long_tokens, n, args.startup_only)
                    for n in args.workers}
            theirs = {} if args.startup_only else {
                n: bench_wllama(browser, url, manifest["model"]["url"], prompts, args.runs, args.long_tokens, n)
                for n in args.workers}
            version = browser.version
            browser.close()
    finally:
        server.stop()
    if args.startup_only:
        summary = {"pychat": {n: summarize_startup(r) for n, r in ours.items()}}
    else:
        pychat = {n: summarize_pychat(r) for n, r in ours.items()}
        wllama = {n: summarize_wllama(r) for n, r in theirs.items()}
        summary = {"pychat": pychat, "wllama": wllama, "ratios": ratios(pychat, wllama)}
    summary["chromium"] = version
    summary["pyodide"] = manifest["pyodide"]["version"]
    summary["bench_seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "pychat": ours, "wllama": theirs}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
