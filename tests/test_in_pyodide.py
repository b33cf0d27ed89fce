"""The engine inside Pyodide 0.17.1 (Python 3.8, numpy 1.17) in headless Chromium, against native oracles.

How it works: this module builds our wheel, writes fixture files natively (GGUF files made with
gguf.GGUFWriter, an HTML page), and serves them together with the Pyodide distribution, the product's
web/pyodide_runtime.js and the harness (tests/pyodide_harness/) from a temporary directory on
127.0.0.1. One Chromium page boots Python in a classic worker exactly as the product does, then each test
runs one named check from tests/pyodide_harness/browser_checks.py in that same worker and compares what
the engine computed in the browser with an independent reference computed here: gguf-py for the reader
and dequantization, transformers' conversion of the SmolLM2 tokenizer and its chat templates, and the
golden greedy answer recorded with transformers and llama.cpp (docs/models.md).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest
from e2e_helpers import load_build_module  # tests/e2e_helpers.py
from tiny_models import TINY_SPECS, TINY_TOKENS  # tests/tiny_models.py

from pychat_wasm.quants import SUPPORTED_TYPES

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.browser, pytest.mark.slow]

HARNESS = REPO / "tests" / "pyodide_harness"
BOOT_TIMEOUT_S = 90
CHECK_TIMEOUT_S = 120

GOLDEN_MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
GOLDEN_IDS = [504, 3575, 282, 4649, 314, 7042, 30, 2]  # "The capital of France is Paris.<|im_end|>"
GOLDEN_TOP_LOGITS = {504: 29.78, 38634: 28.30, 7026: 27.07}  # first answer position

# No run of spaces before a digit: transformers' GGUF conversion drops SmolLM2's split-digits pre-tokenizer
# ("x   1" gives 'ĠĠ','Ġ','1' there, 'ĠĠĠ','1' in llama.cpp and the original tokenizer.json).
TOKENIZER_TEXTS = [
    "Hello world! The capital of France is Paris, 2024 edition: 42 pages.",
    "北京是中国的首都。",
    "emoji 🙂🚀 and accents: Ça, naïve, Ærø",
    "def f(x):\n\treturn x  +   y * 2\n\n\n    # comment",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "   leading spaces and trailing   ",
]
CONVERSATIONS = [
    GOLDEN_MESSAGES,
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Écris «bonjour» 🙂\n\tcode"}],
]

# Every GGUF metadata value type, including arrays of strings and nested arrays. Floats are exactly representable.
METADATA = {
    "test.uint8": ("uint8", 200), "test.int8": ("int8", -100), "test.uint16": ("uint16", 60000),
    "test.int16": ("int16", -30000), "test.uint32": ("uint32", 4000000000), "test.int32": ("int32", -2000000000),
    "test.float32": ("float32", -1.25), "test.bool": ("bool", True), "test.string": ("string", "héllo, 世界 🙂"),
    "test.uint64": ("uint64", 2 ** 64 - 3), "test.int64": ("int64", -(2 ** 62)), "test.float64": ("float64", 0.1),
    "test.array_int": ("array", [1, -2, 3]), "test.array_float": ("array", [0.5, 1.5]),
    "test.array_string": ("array", ["a", "", "ü"]), "test.array_nested": ("array", [[1, 2], [3]]),
    "test.array_nested_strings": ("array", [["x"], ["y", "z"]]),
}
F32_TENSOR = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1


# -- fixture files, written natively ------------------------------------------------------------------

def write_gguf(path: Path, add_content) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    add_content(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def add_all_value_types(writer) -> None:
    for key, (kind, value) in METADATA.items():
        getattr(writer, "add_" + kind)(key, value)
    writer.add_tensor("f32_tensor", F32_TENSOR)
    writer.add_tensor("f16_tensor", np.ones((2, 32), np.float16))


def random_blocks(qtype, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """`n_blocks` random blocks of `qtype` ([n_blocks, type_size] uint8) that decode to finite values.

    Any byte pattern is a valid block; only fp16/fp32 scale fields may land on inf/NaN, so blocks whose
    reference decoding is not finite are dropped.
    """
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    candidates = rng.integers(0, 256, (4 * n_blocks, type_size), dtype=np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(gguf.quants.dequantize(candidates, qtype)).all(axis=1)
    return candidates[finite][:n_blocks]


def add_quant_tensors(writer, n_rows: int = 3, n_cols: int = 512) -> None:
    """One tensor per supported type, named after it, with random blocks."""
    rng = np.random.default_rng(7)
    for name in SUPPORTED_TYPES:
        qtype = gguf.GGMLQuantizationType[name]
        block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
        blocks = random_blocks(qtype, n_rows * n_cols // block_size, rng)
        writer.add_tensor(name, blocks.reshape(n_rows, -1), raw_dtype=qtype)


@pytest.fixture(scope="module")
def site(tmp_path_factory, smollm2_path, tiny_models):
    """The served directory: the product's Pyodide files and wheel, the runtime, harness and fixtures."""
    root = tmp_path_factory.mktemp("pyodide_site")
    build_site = load_build_module("build_site")
    build_site.copy_pyodide(root)  # the same file selection the product ships
    wheel = build_site.load_wheel_builder()(root)
    shutil.copy(REPO / "web" / "pyodide_runtime.js", root)
    for path in HARNESS.iterdir():
        if path.is_file():
            shutil.copy(path, root)
    fixtures = root / "fixtures"
    fixtures.mkdir()
    write_gguf(fixtures / "all_value_types.gguf", add_all_value_types)
    write_gguf(fixtures / "quants.gguf", add_quant_tensors)
    (fixtures / "not_a_model.html").write_text("<!doctype html><html><body>404 Not Found</body></html>")
    for arch, (path, _) in tiny_models.items():
        os.symlink(path, fixtures / ("tiny_%s.gguf" % arch))
    os.symlink(smollm2_path, fixtures / "smollm2.gguf")
    return root, wheel.name


@pytest.fixture(scope="module")
def server_url(site):
    root, _ = site
    server = load_build_module("serve").make_server(root, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/" % server.server_address[1]
    server.shutdown()
    server.server_close()


# -- the browser session -------------------------------------------------------------------------------

class BrowserPython:
    """One page whose worker runs Python; `run(name, **args)` runs a check and returns its result."""

    def __init__(self, page):
        self.page = page
        self.console = []
        page.on("console", lambda message: self.console.append(message.text))
        page.on("pageerror", lambda error: self.console.append("page error: %s" % error))

    def call(self, method: str, argument, timeout_s: float):
        """harness[method](argument) in the page, rejected after `timeout_s` (Pyodide can hang silently)."""
        script = """([method, argument, ms]) => Promise.race([
            window.harness[method](...argument),
            new Promise((_, reject) => setTimeout(() => reject(new Error("timed out after " + ms + " ms")), ms))])"""
        try:
            return self.page.evaluate(script, [method, argument, int(timeout_s * 1000)])
        except Exception as error:
            pytest.fail("%s in Pyodide failed: %s\nbrowser console:\n%s"
                        % (method, error, "\n".join(self.console[-30:])), pytrace=False)

    def run(self, name: str, **args):
        outcome = json.loads(self.call("run", [name, args], CHECK_TIMEOUT_S))
        if not outcome["ok"]:
            pytest.fail("check %r raised inside Pyodide:\n%s" % (name, outcome["error"]), pytrace=False)
        return outcome["result"]


@pytest.fixture(scope="module")
def browser_python(browser, server_url, site):
    _, wheel_name = site
    context = browser.new_context()
    page = context.new_page()
    page.goto(server_url + "index.html")
    python = BrowserPython(page)
    config = {"indexURL": server_url + "pyodide/", "wheelURL": server_url + wheel_name,
              "checksURL": server_url + "browser_checks.py", "fixturesURL": server_url + "fixtures/"}
    python.versions = python.call("boot", [config], BOOT_TIMEOUT_S)
    yield python
    context.close()


def decode_array(encoded) -> np.ndarray:
    raw = base64.b64decode(encoded["float32_base64"])
    return np.frombuffer(raw, dtype=np.float32).reshape(encoded["shape"])


# -- the checks ------------------------------------------------------------------------------------------

def test_runtime_is_pyodide_0_17(browser_python):
    """We test the runtime the product ships: Python 3.8 and numpy 1.17 under emscripten, our wheel installed."""
    result = browser_python.run("runtime_versions")
    assert result["platform"] == "emscripten"
    assert result["python"][:2] == [3, 8]
    assert result["numpy"].startswith("1.17.")
    assert result["jinja2"].startswith("2.")
    assert "site-packages" in result["pychat_wasm"]  # imported from the installed wheel, not from a source tree
    assert browser_python.versions["python"] == "%d.%d.%d" % tuple(result["python"])


def test_gguf_metadata_of_every_value_type(browser_python, site):
    root, _ = site
    result = browser_python.run("gguf_metadata", file="all_value_types.gguf")
    expected = {key: value for key, (_, value) in METADATA.items()}
    got = {key: value for key, value in result["metadata"].items() if key.startswith("test.")}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == value, key
    assert result["version"] == 3

    reference = gguf.GGUFReader(str(root / "fixtures" / "all_value_types.gguf"))
    for tensor in reference.tensors:
        info = result["tensors"][tensor.name]
        assert info["shape"] == [int(d) for d in reversed(tensor.shape)]
        assert info["type_id"] == int(tensor.tensor_type)
        assert info["nbytes"] == int(tensor.n_bytes)
    np.testing.assert_array_equal(decode_array(result["f32_values"]["f32_tensor"]), F32_TENSOR)


def test_gguf_typed_errors(browser_python):
    raised = browser_python.run("gguf_typed_errors", file="all_value_types.gguf", html_file="not_a_model.html")
    assert raised["html page"][0] == "NotGGUFError" and "HTML" in raised["html page"][1]
    assert raised["empty"][0] == "NotGGUFError"
    assert raised["cut in counts"][0] == "TruncatedFileError"
    assert raised["cut in metadata"][0] in ("TruncatedFileError", "CorruptHeaderError")  # a length past the end
    assert raised["cut in tensor data"][0] == "TruncatedFileError"


@pytest.mark.parametrize("type_name", SUPPORTED_TYPES)
def test_dequantize_matches_gguf_py(browser_python, site, type_name):
    root, _ = site
    reference = gguf.GGUFReader(str(root / "fixtures" / "quants.gguf"))
    (tensor,) = [t for t in reference.tensors if t.name == type_name]
    expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # [rows, cols]
    got = decode_array(browser_python.run("dequantize", file="quants.gguf", tensor=type_name))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * float(np.abs(expected).max()))


def test_tokenizer_matches_hf(browser_python, hf_smollm2_tokenizer):
    result = browser_python.run("tokenize", texts=TOKENIZER_TEXTS)
    for text, ids, decoded in zip(TOKENIZER_TEXTS, result["ids"], result["decoded"]):
        assert ids == hf_smollm2_tokenizer.encode(text, add_special_tokens=True), text
        assert decoded == text


def test_chat_template_matches_transformers(browser_python, hf_smollm2_tokenizer):
    rendered = browser_python.run("chat_template", conversations=CONVERSATIONS)
    for messages, text in zip(CONVERSATIONS, rendered):
        assert text == hf_smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("policy", ["quantized", "float32"])
@pytest.mark.parametrize("arch", sorted(TINY_SPECS))
def test_tiny_model_logits_match_transformers(browser_python, tiny_models, arch, policy):
    name = "tiny_%s.gguf" % arch  # the site serves tiny_models[arch][0] under this name
    expected = tiny_models[arch][1]
    got = decode_array(browser_python.run("model_logits", file=name, tokens=TINY_TOKENS, policy=policy))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_smollm2_greedy_answer_is_golden(browser_python, hf_smollm2_tokenizer):
    """The whole chat path in wasm: template, tokenizer, prefill, greedy decode of the real model."""
    result = browser_python.run("smollm2_greedy", messages=GOLDEN_MESSAGES, max_new_tokens=len(GOLDEN_IDS) + 4)
    expected_prompt = hf_smollm2_tokenizer.apply_chat_template(GOLDEN_MESSAGES, add_generation_prompt=True,
                                                               tokenize=True)
    assert result["prompt_ids"] == list(getattr(expected_prompt, "input_ids", expected_prompt))
    assert result["new_ids"] == GOLDEN_IDS
    assert result["text"] == "The capital of France is Paris.<|im_end|>"
    top = dict(result["first_top_logits"])
    assert sorted(top) == sorted(GOLDEN_TOP_LOGITS)
    for token, logit in GOLDEN_TOP_LOGITS.items():
        assert top[token] == pytest.approx(logit, abs=0.02)


@pytest.mark.parametrize("settings", [
    {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 1234},
    {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "seed": 2 ** 52 + 7},
])
def test_seeded_sampling_is_the_same_as_native(browser_python, settings):
    """Same seed, same logits: the same ids on Python 3.8 + numpy 1.17 in wasm as on this CPython + numpy 2."""
    from pychat_wasm.sampler import Sampler, SamplingSettings

    rows = np.random.default_rng(5).standard_normal((8, 49152)).astype(np.float32) * 4  # [steps, vocab]
    encoded = {"shape": list(rows.shape), "float32_base64": base64.b64encode(rows.tobytes()).decode("ascii")}
    got = browser_python.run("seeded_sampling", logits=encoded, settings=settings, steps=200)
    sampler, expected = Sampler(SamplingSettings(**settings)), []
    for step in range(200):
        expected.append(sampler.sample(rows[step % rows.shape[0]], expected))
    assert got == expected
    assert len(set(got)) > 20  # really sampling, not stuck on one id
