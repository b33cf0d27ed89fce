"""What the library API and its HTTP server cost: time to first token and tokens/s through the bare engine
(ChatSession.reply), the Python API (pychat_wasm.LLM, streamed) and HTTP (`pychat-wasm serve`, streamed
server-sent events read by http.client), in the same run on the same model and prompt.

    python bench/bench_api.py                        # SmolLM2-135M Q4_1, 64 tokens, best of 3
    python bench/bench_api.py MODEL.gguf --n-gen 128 --repeats 5

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
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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


def interleaved_best(paths: Dict[str, Callable[[int], Iterator[str]]], repeats: int) -> Dict[str, Dict[str, float]]:
    """Best time to first token and tokens/s of each path after a warm-up, the paths taking turns run by run
    so that a change in the machine's load falls on all of them alike."""
    runs: Dict[str, list] = {name: [] for name in paths}
    for round_ in range(repeats + 1):
        for index, (name, pieces) in enumerate(paths.items()):
            result = timed(pieces(100 * index + round_))
            if round_ > 0:  # round 0 warms up
                runs[name].append(result)
    return {name: {"ttft": min(r[0] for r in rs), "tps": max(r[2] / r[1] for r in rs if r[1] > 0)}
            for name, rs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = model_path(args.model)

    session = ChatSession.from_gguf(GGUFFile.open(str(model)), context_length=CONTEXT)
    llm = LLM(model, context_length=CONTEXT)
    process, port = start_server(model)
    try:
        results = interleaved_best({"engine": engine_pieces(session, args.n_gen),
                                    "python API": api_pieces(llm, args.n_gen),
                                    "HTTP": http_pieces(port, args.n_gen)}, args.repeats)
    finally:
        process.terminate()
        process.wait()

    engine = results["engine"]
    print("%-11s %14s %10s %18s %16s" % ("path", "first token", "tok/s", "tok/s vs engine", "TTFT vs engine"))
    for name, r in results.items():
        print("%-11s %12.1f ms %10.1f %18.3f %16.3f" % (name, r["ttft"] * 1e3, r["tps"], r["tps"] / engine["tps"],
                                                        r["ttft"] / engine["ttft"]))
    print("target: tok/s vs engine >= 0.95 (the API layers cost at most 5%)")


if __name__ == "__main__":
    main()
