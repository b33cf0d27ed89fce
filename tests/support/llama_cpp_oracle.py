"""llama.cpp as an oracle: runs tests/support/llama_cpp_greedy.mjs (node-llama-cpp on the CPU) on one request.

A missing node or node-llama-cpp fails the test (the oracle never skips silently).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "support" / "llama_cpp_greedy.mjs"


def llama_cpp_results(model_path, jobs: List[Dict[str, Any]], timeout: int = 300, **request: Any) -> List[Dict]:
    """One result per job ({"tokens", "generated", "logits"}: see the script's header for the request's fields)."""
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "node-llama-cpp").is_dir():
        pytest.fail("node and node_modules/node-llama-cpp are needed: run npm install (scripts/setup.sh)")
    payload = json.dumps(dict(request, model=str(model_path), jobs=jobs))
    done = subprocess.run([node, str(SCRIPT)], input=payload, capture_output=True, text=True, cwd=str(REPO),
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["results"]
