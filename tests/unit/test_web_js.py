"""The page's pure JavaScript under Node's own test runner: tests/unit/js/*.test.mjs load web/ scripts in a V8
context of their own (tests/unit/js/web_scripts.mjs) and check the conversation import and the model download's
decisions. Run here so that pytest (and CI) runs them: `node --test` must pass every one."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

JS_TESTS = Path(__file__).resolve().parent / "js"


def test_node_unit_tests_pass():
    node = shutil.which("node")
    assert node, "node is not installed (scripts/setup.sh installs Node 20)"
    files = sorted(JS_TESTS.glob("*.test.mjs"))
    assert len(files) >= 2
    result = subprocess.run([node, "--test", *map(str, files)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout
