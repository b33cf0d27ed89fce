"""`pychat-wasm serve` as a subprocess on 127.0.0.1 for the tests that drive it with the official `openai` client:
start it on a free port, wait (polling /health, no fixed sleep) until it has loaded the model, stop it."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 300  # seconds for the server to load the model on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, headers=None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
        return json.loads(response.read())


def wait_for(condition, what: str, timeout: float = 120.0):
    """Poll `condition` until it returns something truthy (no fixed sleep: it returns as soon as it holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


@contextlib.contextmanager
def running_server(model_path: Path, *options: str) -> Iterator[str]:
    """The base URL of `pychat-wasm serve model_path --port P *options` once /health answers ok; the server must
    still be up when the block ends, and is stopped then."""
    port = free_port()
    command = [sys.executable, "-m", "pychat_wasm.cli", "serve", str(model_path), "--port", str(port), *options]
    process = subprocess.Popen(command, cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = "http://127.0.0.1:%d" % port

    def healthy():
        if process.poll() is not None:
            pytest.fail("the server exited: %s" % process.stdout.read())
        try:
            return get_json(base + "/health")["status"] == "ok"
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_for(healthy, "the server's /health", START_TIMEOUT)
        yield base
        assert process.poll() is None, "the server must stay up through every test"
    finally:
        process.terminate()
        process.wait(timeout=30)
