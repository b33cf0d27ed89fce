"""The `pychat-wasm` command: info, tokenize, detokenize, and clean errors (exit 1, no traceback)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import gguf
import pytest


def run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pychat_wasm.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_info_json_matches_gguf_py(smollm2_path):
    result = run("info", smollm2_path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    ref = gguf.GGUFReader(str(smollm2_path))
    hist = {}
    for t in ref.tensors:
        hist[t.tensor_type.name] = hist.get(t.tensor_type.name, 0) + 1
    assert info["tensor_types"] == hist == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert info["architecture"] == "llama" and info["tokenizer"] == "gpt2" and info["chat_template"] is True
    assert info["parameters"] == sum(int(t.n_elements) for t in ref.tensors)
    assert info["hyperparameters"]["block_count"] == 30 and info["hyperparameters"]["attention.head_count_kv"] == 3
    assert info["file_bytes"] == smollm2_path.stat().st_size and info["vocab_size"] == 49152


def test_info_table(gemma3_path):
    result = run("info", gemma3_path)
    assert result.returncode == 0, result.stderr
    for expected in ("gemma3", "Q6_K × 9", "Q4_K × 27", "sliding_window", "262144 tokens"):
        assert expected in result.stdout
    assert re.search(r"chat template +no", result.stdout)
    assert re.search(r"layer_norm_rms_epsilon +1e-06\n", result.stdout)


@pytest.mark.slow
def test_tokenize_and_detokenize_match_transformers(smollm2_path, hf_smollm2_tokenizer, tmp_path):
    text = "Hello world!\n\tdef f(x):  return x  # 世界 🙂 <|im_start|>"
    expected = hf_smollm2_tokenizer.encode(text, add_special_tokens=False)
    result = run("tokenize", smollm2_path, text)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
    path = tmp_path / "in.txt"
    path.write_text(text, encoding="utf-8")
    assert json.loads(run("tokenize", smollm2_path, "--file", path).stdout) == expected
    no_special = json.loads(run("tokenize", smollm2_path, "<|im_start|>", "--no-special").stdout)
    assert len(no_special) > 1 and 1 not in no_special
    back = run("detokenize", smollm2_path, json.dumps(expected))
    assert back.returncode == 0 and back.stdout == text + "\n"


@pytest.mark.parametrize("args, message", [
    (["info", "/nonexistent.gguf"], "model file not found"),
    (["tokenize", "{model}"], "either as an argument or with --file"),
    (["tokenize", "{model}", "--file", "/nonexistent.txt"], "cannot read /nonexistent.txt"),
    (["detokenize", "{model}", "[1, 2"], "JSON list of integers"),
    (["detokenize", "{model}", "[1, 999999]"], "outside the vocabulary"),
    (["info", "{html}"], "HTML page"),
])
def test_errors_are_one_clean_line(smollm2_path, tmp_path, args, message):
    html = tmp_path / "model.gguf"
    html.write_text("<!DOCTYPE html><html><body>404</body></html>")
    result = run(*[a.format(model=smollm2_path, html=html) for a in args])
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
