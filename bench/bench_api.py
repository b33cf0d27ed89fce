"""What the library API and its HTTP server cost: time to first token and tokens/s through the bare engine
(ChatSession.reply), the Python API (pychat_wasm.LLM, streamed) and HTTP (`pychat-wasm serve`, streamed
server-sent events read by http.client), in the same run on the same model and prompt; then the JavaScript
layer in Chromium: web/pychat.js's engine (createEngine, chat.completions.create streamed: worker.js's message
loop, the pool, api_requests.js, as the page's chat goes too) against the bare worker path (the worker's own
begin_request / next_chunk loop, called in the worker), on one engine of the built site's model.

    python bench/bench_api.py                        # SmolLM2-135M Q4_1, 64 tokens, best of 3
    python bench/bench_api.py MODEL.gguf --n-gen 128 --repeats 5
    python bench/bench_api.py --no-browser           # Python and HTTP only (no dist/site needed)
    python bench/bench_api.py --browser-only         # the JavaScript layer only

Every path decodes greedily with the same settings, so each produces the same tokens. Each run starts its
message with its own number, so no path reuses more of the KV cache than the template's preamble. Time to
first token runs from the call (the request) to the first piece of text; tokens/s counts the tokens after
it. Each figure is the best of --repeats runs after one warm-up (a shared machine only ever slows a run),
the three paths taking turns run by run.
The target: the API layers cost at most 5% of generation speed (ratios >= 0.95).
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # conftest: the Chromium the tests use
sys.path.insert(0, str(REPO / "tests" / "support"))

from pychat_wasm.api import LLM  # noqa: E402
from pychat_wasm.chat.sampler import SamplingSettings  # noqa: E402
from pychat_wasm.chat.session import ChatSession  # noqa: E402
from pychat_wasm.cli.common import model_path  # noqa: E402
from pychat_wasm.gguf.reader import GGUFFile  # noqa: E402

CONTEXT = 1024
USER_MESSAGE = ("Write a long story about a lighthouse keeper who finds a message in a bottle, with many "
                "details about the sea, the weather and the village nearby.")


def messages(run: int):
    return [{"role": "user", "content": "Run %d. %s" % (run, USER_MESSAGE)}]


def timed(pieces: Iterator[str]) -> Tuple[float, float, int]:
    """(seconds to the first piece, seconds from it to the last, pieces after the first), from the call."""
    start = time.perf_counter()
    first = last = None
    count = 0
    for piece in pieces:
        if not piece:
            continue
        last = time.perf_counter()
        if first is None:
            first = last
        else:
            count += 1
    return first - start, last - first, count


def engine_pieces(session: ChatSession, n_gen: int) -> Callable[[int], Iterator[str]]:
    settings = SamplingSettings(temperature=0, repeat_penalty=1.0, max_tokens=n_gen)
    return lambda run: (e.text for e in session.reply(messages(run), settings) if e.kind == "piece")


def api_pieces(llm: LLM, n_gen: int) -> Callable[[int], Iterator[str]]:
    def pieces(run: int) -> Iterator[str]:
        for chunk in llm.create_chat_completion(messages(run), temperature=0, max_tokens=n_gen, stream=True):
            yield chunk["choices"][0]["delta"].get("content", "")
    return pieces


def http_pieces(port: int, n_gen: int) -> Callable[[int], Iterator[str]]:
    def pieces(run: int) -> Iterator[str]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        body = json.dumps({"messages": messages(run), "temperature": 0, "max_tokens": n_gen, "stream": True})
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        for line in response:
            line = line.strip()
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                yield json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        connection.close()
    return pieces


def start_server(model: Path) -> Tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "pychat_wasm.cli", "serve", str(model), "--port", str(port),
                                "--context", str(CONTEXT)], cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


# In the page: one streamed answer through the engine's API, timed as timed() times pieces.
ENGINE_RUN = """async (body) => {
  const start = performance.now();
  let first = null, last = null, count = 0;
  for await (const chunk of await engine.chat.completions.create(body)) {
    if (!chunk.choices.length || !chunk.choices[0].delta.content) continue;
    last = performance.now();
    if (first === null) first = last; else count++;
  }
  return [(first - start) / 1000, (last - first) / 1000, count];
}"""
# In the engine's worker: the same answer by the worker's own loop over Python's next_chunk, no messages.
WORKER_RUN = """(body) => {
  const start = performance.now();
  let first = null, last = null, count = 0;
  const begun = JSON.parse(api.begin_request("chat.completions", JSON.stringify(body)));
  if (!begun.ok) throw new Error(begun.error.message);
  for (let reply = JSON.parse(api.next_chunk(false)); !reply.done; reply = JSON.parse(api.next_chunk(false))) {
    const chunk = reply.item;
    if (!chunk || !chunk.choices.length || !chunk.choices[0].delta.content) continue;
    last = performance.now();
    if (first === null) first = last; else count++;
  }
  return [(first - start) / 1000, (last - first) / 1000, count];
}"""
HOST_PAGE = "/bench-host.html"  # an empty page of the site's origin, as another page using the engine


def browser_paths(page, worker, n_gen: int) -> Dict[str, Callable[[int], Tuple[float, float, int]]]:
    """The JS API and the bare worker path, each run timed in the browser: (seconds, seconds, pieces)."""
    def body(run: int):
        return {"messages": messages(run), "temperature": 0, "max_tokens": n_gen, "stream": True}
    return {"JS API": lambda run: tuple(page.evaluate(ENGINE_RUN, body(run))),
            "worker": lambda run: tuple(worker.evaluate(WORKER_RUN, body(run)))}


def browser_results(site: Path, n_gen: int, repeats: int) -> Dict[str, Dict[str, float]]:
    """The JS layer's figures: an engine of the site's model (one worker, the same context) in Chromium."""
    from playwright.sync_api import sync_playwright
    from conftest import CHROMIUM, CHROMIUM_ARGS
    from e2e_helpers import SiteServer, load_build_module

    class HostHandler(load_build_module("serve").SiteHandler):
        def send_head(self):
            if self.path != HOST_PAGE:
                return super().send_head()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.span_length = 0
            return io.BytesIO(b"")

        def log_message(self, format, *args):  # noqa: A002
            pass

    server = SiteServer(site, HostHandler)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(1_800_000)
            page.goto(server.url.rstrip("/") + HOST_PAGE)
            page.evaluate("""async (context) => {
                const {createEngine} = await import("/pychat.js");
                self.engine = await createEngine({workers: 1, contextLength: context});
            }""", CONTEXT)
            (worker,) = page.workers
            results = interleaved_best(browser_paths(page, worker, n_gen), repeats, run_timed=lambda run: run)
            browser.close()
    finally:
        server.stop()
    return results


def interleaved_best(paths: Dict[str, Callable[[int], Any]], repeats: int,
                     run_timed: Callable[[Any], Tuple[float, float, int]] = timed) -> Dict[str, Dict[str, float]]:
    """Best time to first token and tokens/s of each path after a warm-up, the paths taking turns run by run
    so that a change in the machine's load falls on all of them alike. run_timed: a run's figures from what
    a path returns (pieces to time here, or figures timed where it ran)."""
    runs: Dict[str, list] = {name: [] for name in paths}
    for round_ in range(repeats + 1):
        for index, (name, run) in enumerate(paths.items()):
            result = run_timed(run(100 * index + round_))
            if round_ > 0:  # round 0 warms up
                runs[name].append(result)
    return {name: {"ttft": min(r[0] for r in rs), "tps": max(r[2] / r[1] for r in rs if r[1] > 0)}
            for name, rs in runs.items()}


def print_table(results: Dict[str, Dict[str, float]], reference: str, flush: bool = False) -> None:
    base = results[reference]
    print("%-11s %14s %10s %18s %16s" % ("path", "first token", "tok/s", "tok/s vs " + reference,
                                         "TTFT vs " + reference))
    for name, r in results.items():
        print("%-11s %12.1f ms %10.1f %18.3f %16.3f" % (name, r["ttft"] * 1e3, r["tps"], r["tps"] / base["tps"],
                                                        r["ttft"] / base["ttft"]), flush=flush)


def native_results(model: Path, n_gen: int, repeats: int) -> Dict[str, Dict[str, float]]:
    """The bare engine, the Python API and HTTP, taking turns."""
    session = ChatSession.from_gguf(GGUFFile.open(str(model)), context_length=CONTEXT)
    llm = LLM(model, context_length=CONTEXT)
    process, port = start_server(model)
    try:
        return interleaved_best({"engine": engine_pieces(session, n_gen), "python API": api_pieces(llm, n_gen),
                                 "HTTP": http_pieces(port, n_gen)}, repeats)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--site", type=Path, default=REPO / "dist" / "site",
                        help="the built site whose default model the browser half runs")
    parser.add_argument("--no-browser", action="store_true", help="skip the JavaScript layer in Chromium")
    parser.add_argument("--browser-only", action="store_true", help="only the JavaScript layer in Chromium")
    args = parser.parse_args()
    if not args.no_browser and not (args.site / "manifest.json").exists():
        raise SystemExit("%s is missing: run `python build/build_site.py` first (or --no-browser)" % args.site)
    if not args.browser_only:
        print_table(native_results(model_path(args.model), args.n_gen, args.repeats), "engine", flush=True)
    if not args.no_browser:
        print("in Chromium (%s):" % json.loads((args.site / "manifest.json").read_text())["model"]["name"])
        print_table(browser_results(args.site, args.n_gen, args.repeats), "worker")
    print("target: tok/s vs engine (vs worker in Chromium) >= 0.95 (the API layers cost at most 5%)")


if __name__ == "__main__":
    main()
