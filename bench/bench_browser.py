"""Benchmark the in-browser chat in Chromium, next to wllama (llama.cpp in wasm) on the same model.

Measures, in one Chromium run on 127.0.0.1:
  - pychat-wasm: time to ready on a first visit (download + Python + model load) and on a cached visit
    (service worker + IndexedDB), time to first token and generation speed for the golden prompt,
    and generation speed on a longer greedy answer;
  - wllama 3.8.1 (npm @wllama/wllama, single thread: no COOP/COEP here): model load, time to first
    token and generation speed on the same prompts, rendered with the same chat template.

    $ python bench/bench_browser.py [--runs 2] [--long-tokens 64] [--json results.json]

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
sys.path.insert(0, str(REPO / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from e2e_helpers import SiteServer, ask, load_build_module, set_settings, wait_ready  # noqa: E402

serve = load_build_module("serve")
SITE = REPO / "dist" / "site"
MOUNTS = {"/wllama/": REPO / "node_modules" / "@wllama" / "wllama" / "esm", "/bench/": REPO / "bench"}
GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
LONG_QUESTION = "Write a short story about a robot who learns to paint."
TIMEOUT_MS = 300_000
GREEDY = dict(temperature=0, repeat_penalty=1, seed=None)

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
    from pychat_wasm.chat_template import ChatTemplate
    from pychat_wasm.gguf_reader import GGUFFile
    from pychat_wasm.tokenizer import load_tokenizer

    gguf = GGUFFile.open(str(model_path))
    tokenizer = load_tokenizer(gguf)
    return ChatTemplate.from_gguf(gguf, tokenizer).render([{"role": "user", "content": question}])


def parse_stats(line: str) -> dict:
    """'8 tokens · 3.8 tok/s · first token 7.85 s · prompt 42 new + 0 cached tokens' -> numbers."""
    tokens, tps = re.match(r"(\d+) tokens · ([\d.]+) tok/s", line).groups()
    first = re.search(r"first token ([\d.]+) s", line)
    return {"tokens": int(tokens), "tokens_per_second": float(tps),
            "first_token_seconds": float(first.group(1)) if first else None}


def bench_pychat(browser, url: str, runs: int, long_tokens: int) -> dict:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.add_init_script(READY_RECORDER)
    results = {"ready_cold_seconds": None, "ready_cached_seconds": [], "golden": [], "long": None}
    page.goto(url)
    wait_ready(page, TIMEOUT_MS)
    results["ready_cold_seconds"] = page.evaluate("window.__readyAt") / 1000
    for run in range(runs):
        set_settings(page, max_tokens=16, **GREEDY)
        answer, stats = ask(page, GOLDEN_QUESTION, TIMEOUT_MS)  # a fresh worker: the whole prompt is new
        results["golden"].append(dict(parse_stats(stats), answer=answer))
        page.click("#clear")
        page.reload()
        wait_ready(page, TIMEOUT_MS)
        results["ready_cached_seconds"].append(page.evaluate("window.__readyAt") / 1000)
    set_settings(page, max_tokens=long_tokens, **GREEDY)
    answer, stats = ask(page, LONG_QUESTION, TIMEOUT_MS)
    results["long"] = dict(parse_stats(stats), answer=answer)
    page.click("#clear")
    context.close()
    return results


def bench_wllama(browser, url: str, model_url: str, prompts: dict, runs: int, long_tokens: int) -> dict:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url + "bench/wllama_bench.html")
    page.wait_for_function("window.wllamaBenchReady === true")
    load = page.evaluate("a => wllamaBench.load(a)", {"modelURL": url + model_url, "nThreads": 1})
    results = {"load_seconds": load["seconds"], "golden": [], "long": None}
    for run in range(runs):
        # A different prefix each run would be needed to defeat llama.cpp's prompt cache; report its cache_n.
        results["golden"].append(page.evaluate("a => wllamaBench.complete(a)",
                                               {"prompt": prompts["golden"], "maxTokens": 16}))
    results["long"] = page.evaluate("a => wllamaBench.complete(a)", {"prompt": prompts["long"], "maxTokens": long_tokens})
    context.close()
    return results


def summarize(ours: dict, theirs: dict) -> dict:
    first_golden = theirs["golden"][0]
    ours_tps = ours["long"]["tokens_per_second"]
    theirs_tps = theirs["long"]["timings"]["predicted_per_second"] if theirs["long"]["timings"] else None
    return {
        "pychat_ready_cold_s": round(ours["ready_cold_seconds"], 2),
        "pychat_ready_cached_s": round(statistics.median(ours["ready_cached_seconds"]), 2),
        "pychat_golden_first_token_s": round(statistics.median(g["first_token_seconds"] for g in ours["golden"]), 2),
        "pychat_golden_generation_tok_s": round(statistics.median(g["tokens_per_second"] for g in ours["golden"]), 2),
        "pychat_long_generation_tok_s": ours_tps,
        "pychat_golden_answer": ours["golden"][0]["answer"],
        "wllama_load_s": round(theirs["load_seconds"], 2),
        "wllama_golden_first_token_s": round(first_golden["firstTokenSeconds"], 2),
        "wllama_golden_prompt_tokens": first_golden["timings"] and first_golden["timings"]["prompt_n"],
        "wllama_golden_answer": first_golden["text"],
        "wllama_long_generation_tok_s": round(theirs_tps, 2) if theirs_tps else None,
        "generation_ratio_wllama_over_pychat": round(theirs_tps / ours_tps, 2) if theirs_tps and ours_tps else None,
        "first_token_ratio_pychat_over_wllama": round(
            statistics.median(g["first_token_seconds"] for g in ours["golden"]) / first_golden["firstTokenSeconds"], 2),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark pychat-wasm and wllama in Chromium")
    parser.add_argument("--runs", type=int, default=2, help="golden-prompt runs (each after a reload)")
    parser.add_argument("--long-tokens", type=int, default=64, help="tokens of the longer greedy answer")
    parser.add_argument("--json", type=Path, help="also write all raw figures here")
    parser.add_argument("--site", type=Path, default=SITE, help="the built site (e.g. an older build, to compare)")
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
            ours = bench_pychat(browser, url, args.runs, args.long_tokens)
            theirs = bench_wllama(browser, url, manifest["model"]["url"], prompts, args.runs, args.long_tokens)
            version = browser.version
            browser.close()
    finally:
        server.stop()
    summary = summarize(ours, theirs)
    summary["chromium"] = version
    summary["pyodide"] = manifest["pyodide"]["version"]
    summary["bench_seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "pychat": ours, "wllama": theirs}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
