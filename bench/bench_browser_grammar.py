"""Grammar speed in the browser: tokens/s with a JSON Schema grammar against unconstrained, same prompt, same
model, same run, through the browser engine (web/pychat.js `createEngine`, its `chat.completions.create`).

An empty page of the built site's origin (cross-origin isolated, as the site is served) creates one engine of the
site's default model and streams the same greedy request twice in turn, `--repeat` times: without a grammar, and
with `response_format: {type: "json_schema"}` and bench_grammar.py's PERSON schema (four properties: name, age,
city, hobbies). Both answers are capped at `--tokens`; the constrained one ends earlier when its JSON is
complete. Generation speed is measured in the page, from the first streamed piece to the end
((completion_tokens - 1) / seconds), and reported next to what the worker measured itself (llama.cpp's
`timings.predicted_per_second`); the best of each counts, so that a busy machine slows both alike. Prints
the ratio constrained / unconstrained (target >= 0.85, issue 21; the native figure is bench_grammar.py's).

    $ python bench/bench_browser_grammar.py [--tokens 48] [--repeat 3] [--workers 1] [--json out.json]

Needs the built site (python build/build_site.py). Not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # conftest: the Chromium the tests use
sys.path.insert(0, str(REPO / "tests" / "support"))
sys.path.insert(0, str(REPO / "bench"))

from bench_grammar import PERSON, QUESTION  # noqa: E402  the native bench's schema and question
from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from e2e_helpers import SiteServer, serve  # noqa: E402

SITE = REPO / "dist" / "site"
HOST_PAGE = "/bench-host.html"  # an empty page of the site's origin, as a page using the engine would be
TIMEOUT_MS = 600_000

# One streamed request in the page: the answer, its usage and timings, and the page's own clock.
STREAM = """async (params) => {
  const started = performance.now();
  let first = null, text = "", usage = null, timings = null;
  for await (const chunk of await engine.chat.completions.create(params)) {
    const piece = chunk.choices.length ? chunk.choices[0].delta.content : null;
    if (piece) { if (first === null) first = performance.now(); text += piece; }
    if (chunk.usage) { usage = chunk.usage; timings = chunk.timings; }
  }
  const ended = performance.now();
  return {text, usage, timings, first_token_ms: first - started, generation_ms: ended - first};
}"""


class HostHandler(serve.SiteHandler):
    """The built site, plus an empty page of its origin (with the site's isolation headers) to host the engine."""

    def send_head(self):
        if self.path != HOST_PAGE:
            return super().send_head()
        body = b"<!doctype html><title>bench</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in self.isolation_headers():
            self.send_header(name, value)
        self.end_headers()
        self.span_length = len(body)
        return io.BytesIO(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


def request(tokens: int, schema: dict = None) -> dict:
    """The greedy streamed request, constrained by `schema` when given."""
    params = {"messages": [{"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": tokens,
              "stream": True, "stream_options": {"include_usage": True}}
    if schema is not None:
        params["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "person", "schema": schema, "strict": True}}
    return params


def speeds(run: dict) -> dict:
    """Generation tokens/s as the page saw it and as the worker measured it, with the run's figures."""
    tokens = run["usage"]["completion_tokens"]
    page = (tokens - 1) / (run["generation_ms"] / 1000) if tokens > 1 and run["generation_ms"] > 0 else 0.0
    return {"tokens": tokens, "page_tok_s": round(page, 2),
            "worker_tok_s": round(run["timings"]["predicted_per_second"], 2),
            "first_token_s": round(run["first_token_ms"] / 1000, 2), "text": run["text"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Grammar speed in the browser: JSON Schema vs unconstrained")
    parser.add_argument("--tokens", type=int, default=48, help="max_tokens of each answer")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs, taking turns; the best of each counts")
    parser.add_argument("--workers", type=int, default=1, help="workers splitting each token")
    parser.add_argument("--site", type=Path, default=SITE, help="the built site")
    parser.add_argument("--json", type=Path, help="also write all raw figures here")
    args = parser.parse_args(argv)
    if not (args.site / "manifest.json").exists():
        raise SystemExit("%s is missing: run `python build/build_site.py` first" % args.site)

    from playwright.sync_api import sync_playwright

    server = SiteServer(args.site, HostHandler)
    runs = {"unconstrained": [], "json_schema": []}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context().new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server.url.rstrip("/") + HOST_PAGE)
            page.evaluate("""async (workers) => {
                const {createEngine} = await import("/pychat.js");
                self.engine = await createEngine({workers});
            }""", args.workers)
            for _ in range(args.repeat):
                runs["unconstrained"].append(speeds(page.evaluate(STREAM, request(args.tokens))))
                runs["json_schema"].append(speeds(page.evaluate(STREAM, request(args.tokens, PERSON))))
            version = browser.version
            browser.close()
    finally:
        server.stop()
    best = {kind: {clock: max(run[clock] for run in done) for clock in ("page_tok_s", "worker_tok_s")}
            for kind, done in runs.items()}
    summary = {
        "unconstrained": best["unconstrained"], "json_schema": best["json_schema"],
        "ratio_page": round(best["json_schema"]["page_tok_s"] / best["unconstrained"]["page_tok_s"], 3),
        "ratio_worker": round(best["json_schema"]["worker_tok_s"] / best["unconstrained"]["worker_tok_s"], 3),
        "tokens": {kind: [run["tokens"] for run in done] for kind, done in runs.items()},
        "json_answer": runs["json_schema"][0]["text"], "workers": args.workers, "chromium": version,
    }
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    print("ratio constrained / unconstrained: %.2f in the page, %.2f in the worker (target >= 0.85)"
          % (summary["ratio_page"], summary["ratio_worker"]))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    started = time.time()
    main(sys.argv[1:])
    print("bench: %.0f s" % (time.time() - started))
