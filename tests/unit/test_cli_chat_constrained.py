"""`pychat-wasm chat --json | --json-schema FILE | --grammar FILE`: every answer constrained, checked by references
independent of the engine (json.loads, the `jsonschema` package, Python's `re`), with llama.cpp's own GBNF files
(json.gbnf, list.gbnf, as node-llama-cpp ships them); a file that cannot constrain fails with one line naming it,
before the model loads."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
LLAMA_GRAMMARS = REPO / "node_modules" / "node-llama-cpp" / "llama" / "grammars"
CHAT = [sys.executable, "-m", "pychat_wasm.cli", "chat"]
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 16},
    "age": {"type": "integer", "minimum": 0, "maximum": 30},
    "colour": {"enum": ["black", "white", "ginger", "grey"]}},
    "required": ["name", "age", "colour"], "additionalProperties": False}
LIST_LINE = r"- [^\r\n\x0b\x0c\x85\u2028\u2029]+\n"  # list.gbnf's item, in Python's re


def run_chat(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(CHAT + list(args), cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)


def answer(model: Path, prompt: str, *options: str) -> str:
    result = run_chat(str(model), "--prompt", prompt, "--context", "512", "-n", "160", *options)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    return result.stdout[:-1]  # the CLI ends the answer with a newline


def llama_grammar(name: str) -> Path:
    path = LLAMA_GRAMMARS / name
    assert path.is_file(), "llama.cpp's grammars are missing (npm ci installs node-llama-cpp): %s" % path
    return path


@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--temperature", "1", "--seed", "11"]])
def test_json_answers_are_json_objects(smollm2_path, sampling):
    value = json.loads(answer(smollm2_path, "Describe a cat.", "--json", *sampling))
    assert isinstance(value, dict)


@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--temperature", "1", "--seed", "5"]])
def test_json_schema_answers_validate(smollm2_path, tmp_path, sampling):
    schema_file = tmp_path / "cat.schema.json"
    schema_file.write_text(json.dumps(SCHEMA))
    text = answer(smollm2_path, "Describe a cat as JSON.", "--json-schema", str(schema_file), *sampling)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_llama_cpps_json_grammar_gives_json(smollm2_path):
    text = answer(smollm2_path, "Give a recipe as JSON.", "--grammar", str(llama_grammar("json.gbnf")),
                  "--temperature", "0")
    assert isinstance(json.loads(text), dict)  # json.gbnf's root is an object


def test_llama_cpps_list_grammar_gives_a_list(smollm2_path):
    text = answer(smollm2_path, "Name three fruits.", "--grammar", str(llama_grammar("list.gbnf")),
                  "--temperature", "0")
    assert re.fullmatch("(%s)+" % LIST_LINE, text), text


def test_every_interactive_answer_is_constrained(smollm2_path, tmp_path):
    """Two turns read from stdin (no terminal), each answer a JSON object on its line."""
    result = subprocess.run(CHAT + [str(smollm2_path), "--context", "512", "-n", "96", "--temperature", "0",
                                    "--json"],
                            input="Describe a dog.\nNow a horse.\n/exit\n", cwd=str(REPO), capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    answers = re.findall(r"> (.*?)\n\[\d+ prompt tokens", result.stdout, re.S)  # input()'s prompt, the answer
    assert len(answers) == 2 and all(isinstance(json.loads(a), dict) for a in answers), result.stdout


@pytest.mark.parametrize("option, contents, message", [
    ("--json-schema", None, "cannot read it"),
    ("--json-schema", b'{"type": "object",', "is not JSON"),
    ("--json-schema", b'["not", "a", "schema"]', "a JSON schema is an object"),
    ("--json-schema", b'{"type": "array", "uniqueItems": true}', "uniqueItems"),
    ("--json-schema", b'\xff\xfe{}', "is not UTF-8 text"),
    ("--grammar", b'root ::= "a" (', "line 1"),
    ("--grammar", b'root ::= item\n', "item"),
])
def test_a_file_that_cannot_constrain_fails_in_one_line_before_the_model_loads(tmp_path, option, contents, message):
    path = tmp_path / "constraint.txt"
    if contents is not None:
        path.write_bytes(contents)
    result = run_chat(str(tmp_path / "no-such-model.gguf"), "--prompt", "hi", option, str(path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: %s %s" % (option, path)) and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_constraints_exclude_each_other(tmp_path):
    result = run_chat("--prompt", "hi", "--json", "--grammar", str(tmp_path / "g.gbnf"))
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
