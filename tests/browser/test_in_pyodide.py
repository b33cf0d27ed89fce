"""The engine inside Pyodide 0.27.7 (Python 3.12, numpy 2.0) in headless Chromium, against native oracles.

How it works: this module builds our wheel, writes fixture files natively (GGUF files made with
gguf.GGUFWriter, an HTML page), and serves them together with the Pyodide distribution, the product's
web/pyodide_runtime.js and the harness (tests/support/pyodide_harness/) from a temporary directory on
127.0.0.1. One Chromium page boots Python in a classic worker exactly as the product does, then each test
runs one named check from tests/support/pyodide_harness/browser_checks.py in that same worker and compares what
the engine computed in the browser with an independent reference computed here: gguf-py for the reader
and dequantization, transformers' conversion of the SmolLM2 tokenizer and its chat templates, and the
golden greedy answer recorded with transformers and llama.cpp.

The trainer (pychat_wasm.train, gguf_writer, quantize) is compared with the same computation run natively,
whose own oracles (torch autograd, HF tokenizers, gguf-py, llama.cpp) are in tests/test_train_*.py and
friends: gradients of a tiny llama with LoRA, BPE training, byte-identical GGUF writing, a scratch run with
its checkpoint resumed natively and its export, the training worker API and a LoRA fine-tune.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest
from e2e_helpers import load_build_module  # tests/support/e2e_helpers.py
from gguf_files import GGUFValue, write_gguf  # tests/support/gguf_files.py
from llama_cpp_vocabs import KIND_OF  # tests/support/llama_cpp_vocabs.py
from texts import GOLDEN_IDS, GOLDEN_QUESTION  # tests/support/texts.py
from tiny_models import TINY_SPECS, TINY_TOKENS  # tests/support/tiny_models.py

from pychat_wasm.gguf.quants import SUPPORTED_TYPES

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

HARNESS = REPO / "tests" / "support" / "pyodide_harness"
sys.path.insert(0, str(HARNESS))
import browser_checks  # noqa: E402  (tests/support/pyodide_harness/browser_checks.py: its pure helpers run natively too)

BOOT_TIMEOUT_S = 90
CHECK_TIMEOUT_S = 120

GOLDEN_MESSAGES = [{"role": "user", "content": GOLDEN_QUESTION}]
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

# Every GGUF metadata value type, including arrays of strings (nested arrays are refused, as llama.cpp refuses
# them: tests/oracle/test_gguf_reader.py). Floats are exactly representable.
METADATA = {
    "test.uint8": ("uint8", 200), "test.int8": ("int8", -100), "test.uint16": ("uint16", 60000),
    "test.int16": ("int16", -30000), "test.uint32": ("uint32", 4000000000), "test.int32": ("int32", -2000000000),
    "test.float32": ("float32", -1.25), "test.bool": ("bool", True), "test.string": ("string", "héllo, 世界 🙂"),
    "test.uint64": ("uint64", 2 ** 64 - 3), "test.int64": ("int64", -(2 ** 62)), "test.float64": ("float64", 0.1),
    "test.array_int": ("array", [1, -2, 3]), "test.array_float": ("array", [0.5, 1.5]),
    "test.array_string": ("array", ["a", "", "ü"]),
}
F32_TENSOR = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1


# -- fixture files, written natively ------------------------------------------------------------------

def write_all_value_types(path: Path) -> Path:
    metadata = {key: GGUFValue(value, gguf.GGUFValueType[kind.upper()]) for key, (kind, value) in METADATA.items()}
    return write_gguf(path, "llama", metadata, [("f32_tensor", F32_TENSOR), ("f16_tensor", np.ones((2, 32), np.float16))])


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


def write_quant_tensors(path: Path, n_rows: int = 3, n_cols: int = 512) -> Path:
    """One tensor per supported type, named after it, with random blocks."""
    rng = np.random.default_rng(7)
    tensors = []
    for name in SUPPORTED_TYPES:
        qtype = gguf.GGMLQuantizationType[name]
        block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
        blocks = random_blocks(qtype, n_rows * n_cols // block_size, rng)
        tensors.append((name, blocks.reshape(n_rows, -1), qtype))
    return write_gguf(path, "llama", tensors=tensors)


def write_lora_adapter(path: Path, base: Path) -> None:
    """A LoRA adapter for `base` on every matrix of its layers and its output head, random A and B."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.lora import adapter_writer

    base_file = GGUFFile.open(str(base))
    rng = np.random.default_rng(4)
    pairs = {name: (rng.standard_normal((3, info.shape[1])).astype(np.float32),
                    0.2 * rng.standard_normal((info.shape[0], 3)).astype(np.float32))
             for name, info in base_file.tensors.items()
             if len(info.shape) == 2 and (name.startswith("blk.") or name == "output.weight")}
    adapter_writer(base_file, 6.0, pairs, "random").write(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory, smollm2_path, tiny_models):
    """The served directory: the product's Pyodide files and wheel, the runtime, harness and fixtures."""
    root = tmp_path_factory.mktemp("pyodide_site")
    build_site = load_build_module("build_site")
    dependency_wheels = build_site.copy_pyodide(root)  # the same file selection the product ships
    wheel = build_site.load_wheel_builder()(root / "wheels")
    shutil.copy(REPO / "web" / "pyodide_runtime.js", root)
    for path in HARNESS.iterdir():
        if path.is_file():
            shutil.copy(path, root)
    fixtures = root / "fixtures"
    fixtures.mkdir()
    write_all_value_types(fixtures / "all_value_types.gguf")
    write_quant_tensors(fixtures / "quants.gguf")
    (fixtures / "not_a_model.html").write_text("<!doctype html><html><body>404 Not Found</body></html>")
    for arch, (path, _) in tiny_models.items():
        os.symlink(path, fixtures / ("tiny_%s.gguf" % arch))
    write_lora_adapter(fixtures / "tiny_qwen2.lora.gguf", tiny_models["qwen2"][0])
    os.symlink(smollm2_path, fixtures / "smollm2.gguf")
    return root, dependency_wheels + ["wheels/" + wheel.name]


class HarnessHandler(load_build_module("serve").SiteHandler):
    """The site's static server without the app's Content-Security-Policy: the harness page is inline script."""

    def content_security_policy(self, name):
        return None


@pytest.fixture(scope="module")
def server_url(site):
    root, _ = site
    server = load_build_module("serve").make_server(root, port=0, handler=HarnessHandler)
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

    def run(self, name: str, timeout_s: float = CHECK_TIMEOUT_S, **args):
        outcome = json.loads(self.call("run", [name, args], timeout_s))
        if not outcome["ok"]:
            pytest.fail("check %r raised inside Pyodide:\n%s" % (name, outcome["error"]), pytrace=False)
        return outcome["result"]


@pytest.fixture(scope="module")
def browser_python(browser, server_url, site):
    _, wheel_urls = site
    context = browser.new_context()
    page = context.new_page()
    page.goto(server_url + "index.html")
    python = BrowserPython(page)
    config = {"indexURL": server_url + "pyodide/", "wheelURLs": [server_url + url for url in wheel_urls],
              "checksURL": server_url + "browser_checks.py", "fixturesURL": server_url + "fixtures/"}
    python.versions = python.call("boot", [config], BOOT_TIMEOUT_S)
    yield python
    context.close()


def decode_array(encoded) -> np.ndarray:
    raw = base64.b64decode(encoded["float32_base64"])
    return np.frombuffer(raw, dtype=np.float32).reshape(encoded["shape"])


# -- the checks ------------------------------------------------------------------------------------------

def test_runtime_is_pyodide_0_27(browser_python):
    """We test the runtime the product ships: the Python and numpy that Pyodide 0.27.7's own lock file names,
    under emscripten, with Jinja2 on plain-Python MarkupSafe, no `regex`, and our wheel installed."""
    lock = json.loads((REPO / "node_modules" / "pyodide" / "pyodide-lock.json").read_text())
    result = browser_python.run("runtime_versions")
    assert result["platform"] == "emscripten"
    assert browser_python.versions["pyodide"] == lock["info"]["version"] == "0.27.7"
    assert "%d.%d.%d" % tuple(result["python"]) == browser_python.versions["python"] == lock["info"]["python"]
    assert result["numpy"] == browser_python.versions["numpy"] == lock["packages"]["numpy"]["version"]
    pins = load_build_module("browser_packages")
    assert (result["jinja2"], result["markupsafe"]) == (pins.JINJA2[1], pins.MARKUPSAFE_SDIST[1])
    assert result["markupsafe_escape"] == "markupsafe._native"  # no C speedups in wasm
    assert result["regex_installed"] is False  # the tokenizers run on `re` alone
    assert "site-packages" in result["pychat_wasm"]  # imported from the installed wheel, not from a source tree


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


def test_fit_check_from_the_header_is_the_native_one(browser_python, smollm2_path):
    """The page's fit check before a download: the header bytes alone give the figures native CPython computes
    from the whole file; too few bytes ask for more."""
    from pychat_wasm.model.fit_check import fit_check
    from pychat_wasm.gguf.reader import GGUFFile

    header_end = int(gguf.GGUFReader(str(smollm2_path)).data_offset)
    options = {"context_length": 2048, "memory_limit": 300 * 10 ** 6}
    reply = browser_python.run("fit_check_of_header", file="smollm2.gguf", n_bytes=header_end, options=options)
    assert reply["ok"], reply
    assert reply["fit"] == fit_check(GGUFFile.open(str(smollm2_path)), 2048, 300 * 10 ** 6)
    # 98 MB file + 168 MB of int8 weights + 94 MB KV cache > 300 MB: int8 only with a shorter context
    assert reply["fit"]["best"] == "quantized" and reply["fit"]["policies"]["int8"]["context_length"] < 2048
    short = browser_python.run("fit_check_of_header", file="smollm2.gguf", n_bytes=header_end // 2, options={})
    assert not short["ok"] and short["error"]["type"] == "HeaderTruncatedError"


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


def test_tokenizer_splitter_matches_regex(browser_python):
    """The regex-free pre-tokenizer under Pyodide's `re`: the same matches as the `regex` module natively."""
    from unicode_texts import ENCODABLE_CORPUS, PATTERNS, RegexSpans

    got = browser_python.run("pre_token_digests", patterns=PATTERNS, texts=ENCODABLE_CORPUS)
    for pattern, digest in zip(PATTERNS, got):
        assert digest == browser_checks.span_digest(RegexSpans(pattern), ENCODABLE_CORPUS), pattern


def test_tokenizer_unicode_classes_match_regex(browser_python):
    import regex
    from unicode_texts import EVERY_CODE_POINT, NO_SURROGATES

    classes = [r"\p{L}+", r"\p{N}+", r"\p{P}+", r"\p{M}+", r"\p{S}+", r"\s+", r"\S+", r"[^\s\p{L}\p{N}]+",
               r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}]+"] + ["(?i:%s)" % c for c in "strevmld"]  # 'ſ' is an s
    got = browser_python.run("unicode_class_spans", patterns=classes)
    for pattern, spans in zip(classes, got):
        assert spans == [[list(m.span()) for m in regex.finditer(pattern, text)]
                         for text in (EVERY_CODE_POINT, NO_SURROGATES)], pattern


@pytest.fixture(scope="module")
def llama_cpp_suite(site):
    """llama.cpp's tokenizer suite, its vocabularies served as fixtures (llama_cpp_vocabs.py extracts them)."""
    from llama_cpp_vocabs import MissingSuite, suite_vocabs, vocab_path

    root, _ = site
    try:
        names = suite_vocabs()
    except MissingSuite as missing:
        pytest.fail(str(missing))
    for name in names:
        link = root / "fixtures" / vocab_path(name).name
        if not link.exists():
            os.symlink(vocab_path(name), link)
    return names


@pytest.mark.parametrize("name", sorted(KIND_OF))
def test_tokenizer_llama_cpp_suite(browser_python, llama_cpp_suite, name):
    from llama_cpp_vocabs import read_cases, vocab_path

    cases = read_cases(name)
    got = browser_python.run("tokenize_file", file=vocab_path(name).name, texts=list(cases))
    assert dict(zip(cases, got)) == cases


def test_chat_template_matches_transformers(browser_python, hf_smollm2_tokenizer):
    rendered = browser_python.run("chat_template", conversations=CONVERSATIONS)
    for messages, text in zip(CONVERSATIONS, rendered):
        assert text == hf_smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_hostile_templates_and_nan_blocks_are_caught_in_pyodide(browser_python):
    """The sandbox's bounds (sys.settrace, Jinja 2's code generator) and the NaN scan (numpy 1.17) in wasm."""
    from fuzz.mutators import HOSTILE_TEMPLATES
    result = browser_python.run("robustness", templates=HOSTILE_TEMPLATES)
    assert result["raised"] == ["TemplateError"] * len(HOSTILE_TEMPLATES)
    assert result["nonfinite_blocks"] == 2


@pytest.mark.parametrize("policy", ["quantized", "float32"])
@pytest.mark.parametrize("arch", sorted(TINY_SPECS))
def test_tiny_model_logits_match_transformers(browser_python, tiny_models, arch, policy):
    name = "tiny_%s.gguf" % arch  # the site serves tiny_models[arch][0] under this name
    expected = tiny_models[arch][1]
    got = decode_array(browser_python.run("model_logits", file=name, tokens=TINY_TOKENS, policy=policy))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_lora_adapter_applies_and_removes_in_pyodide(browser_python, tiny_models, site):
    """The chat worker's apply_lora / remove_lora in wasm give the native logits (those are checked against PEFT
    and llama.cpp in tests/oracle/test_lora_*.py), and the base's again once removed."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.forward import Model
    from pychat_wasm.model.lora import open_adapters

    got = browser_python.run("lora_logits", file="tiny_qwen2.gguf", adapter="tiny_qwen2.lora.gguf",
                             tokens=TINY_TOKENS, scale=0.5)
    assert got["loaded"] and [a["name"] for a in got["applied"]["adapters"]] == ["tiny_qwen2.lora.gguf"]
    assert got["removed"] == {"ok": True, "adapters": []}
    base_file = GGUFFile.open(str(tiny_models["qwen2"][0]))
    model = Model.from_gguf(base_file, policy="float32")
    adapter = GGUFFile.open(str(site[0] / "fixtures" / "tiny_qwen2.lora.gguf"))
    model.set_adapters(open_adapters(base_file, [(adapter, 0.5)]))
    expected = model.forward(TINY_TOKENS, 0, all_logits=True)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(decode_array(got["adapted"]), expected, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(decode_array(got["base"]), tiny_models["qwen2"][1], rtol=0, atol=1e-3 * scale)
    assert np.abs(expected - tiny_models["qwen2"][1]).max() > 1e-2 * scale  # the adapter matters


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


def test_library_api_answers_in_pyodide(browser_python, hf_smollm2_tokenizer):
    """pychat_wasm.LLM runs in the browser too (numpy and Jinja2 only): the golden answer, whole and streamed."""
    result = browser_python.run("library_api", messages=GOLDEN_MESSAGES)
    expected_prompt = hf_smollm2_tokenizer.apply_chat_template(GOLDEN_MESSAGES, add_generation_prompt=True,
                                                               tokenize=True)
    assert result["text"] == result["streamed"] == "The capital of France is Paris."
    assert result["usage"]["prompt_tokens"] == len(list(getattr(expected_prompt, "input_ids", expected_prompt)))
    assert result["usage"]["completion_tokens"] == len(GOLDEN_IDS) - 1  # the end-of-turn token is not text
    assert result["finish_reasons"][-1] == "stop" and set(result["finish_reasons"][:-1]) == {None}


REWRITE = ("Rewrite this paragraph with British spelling and nothing else changed:\n\nThe old lighthouse stood at "
           "the edge of the cliff for more than a century. Every night its keeper climbed the narrow spiral stairs "
           "to light the lamp, and every morning he wrote the weather in a leather book.")


def test_speculation_in_pyodide_keeps_the_greedy_answer(browser_python, smollm2_path):
    """Prompt-lookup speculation (on by default) in wasm, one worker: a request that copies its prompt gets the
    same greedy token ids as without it and as the native engine without it, and the timings report the drafts
    kept (llama.cpp's draft_n, draft_n_accepted)."""
    from pychat_wasm import LLM

    messages = [{"role": "user", "content": REWRITE}]
    result = browser_python.run("speculative_greedy", timeout_s=4 * CHECK_TIMEOUT_S, messages=messages,
                                max_tokens=24)
    native = LLM(smollm2_path, context_length=512, policy=result["with"]["policy"], speculative=False)
    native_ids = []
    native.session.on_sample = lambda logits, token: native_ids.append(int(token))
    native.create_chat_completion(messages, temperature=0, max_tokens=24)
    assert result["with"]["default_on"]
    assert result["with"]["ids"] == result["without"]["ids"] == native_ids
    assert result["with"]["text"] == result["without"]["text"]
    assert 0 < result["with"]["timings"]["draft_n_accepted"] <= result["with"]["timings"]["draft_n"]
    assert result["without"]["timings"]["draft_n"] == 0


@pytest.mark.parametrize("settings", [
    {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 1234},
    {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "seed": 2 ** 52 + 7},
])
def test_seeded_sampling_is_the_same_as_native(browser_python, settings):
    """Same seed, same logits: the same ids on Pyodide's Python and numpy in wasm as on this CPython + numpy."""
    from pychat_wasm.chat.sampler import Sampler, SamplingSettings

    rows = np.random.default_rng(5).standard_normal((8, 49152)).astype(np.float32) * 4  # [steps, vocab]
    encoded = {"shape": list(rows.shape), "float32_base64": base64.b64encode(rows.tobytes()).decode("ascii")}
    got = browser_python.run("seeded_sampling", logits=encoded, settings=settings, steps=200)
    sampler, expected = Sampler(SamplingSettings(**settings)), []
    for step in range(200):
        expected.append(sampler.sample(rows[step % rows.shape[0]], expected))
    assert got == expected
    assert len(set(got)) > 20  # really sampling, not stuck on one id


# -- the trainer in Pyodide against the same computations done natively --------------------------------------
#
# Here the oracle is the engine itself on this CPython + numpy (BLAS `@` instead of Pyodide's einsum route):
# the native runs are checked against torch, HF tokenizers, gguf-py and llama.cpp elsewhere (tests/test_train_*,
# tests/oracle/test_train_bpe.py, tests/oracle/test_gguf_writer.py), so equality here carries those checks over to Pyodide's
# Python and numpy in wasm. Arrays cross as exact bytes (browser_checks.encode_typed).

TRAIN_CONFIG = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, vocab_size=64, rope_base=500.0)
TRAIN_SEED = 5
LORA_RANK, LORA_SCALE, LORA_PROJECTIONS = 4, 1.5, ("attn_q", "attn_v")
TRAIN_TOLERANCE = 1e-4  # float32 training: losses and gradients (relative), trained parameters (absolute)
SCRATCH_STEPS, SCRATCH_CHECKPOINT_AT = 8, 4
SCRATCH_TIMEOUT_S = 300


def rel_err(got, expected) -> float:
    """max |got - expected| / max |expected| (0 for two all-zero arrays)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    return diff / scale if scale else diff


def assert_trained_close(got, expected, atol: float = TRAIN_TOLERANCE, max_fraction: float = 0.01) -> None:
    """Parameters after some AdamW steps, {name: array} both: every element within `atol`, and all but
    `max_fraction` of them within float32 rounding (1e-6).

    Not a relative bound on the largest difference: AdamW steps by lr * m / (sqrt(v) + eps), which does not
    depend on the gradient's scale, so an element whose gradient is not much larger than the rounding of its
    terms moves by a visibly different step when only the summation order changes. Natively, swapping
    products.matmul's BLAS route for its einsum route makes the same kind of difference: 8 quick-preset steps
    leave a few dozen of 12288 FFN weights up to 6e-5 apart while the losses agree to 1e-7.
    """
    assert sorted(got) == sorted(expected)
    far, total = 0, 0
    for name, value in expected.items():
        mine = np.asarray(got[name], np.float64).reshape(np.shape(value))
        diff = np.abs(mine - np.asarray(value, np.float64))
        assert diff.max() <= atol, "%s: %d of %d elements differ, by up to %.3g" % (
            name, int((diff > 1e-6).sum()), diff.size, diff.max())
        far, total = far + int((diff > 1e-6).sum()), total + diff.size
    assert far <= max_fraction * total, "%d of %d elements differ by more than 1e-6" % (far, total)


def decode_bytes(encoded) -> bytes:
    data = base64.b64decode(encoded["base64"])
    assert len(data) == encoded["length"] and hashlib.sha256(data).hexdigest() == encoded["sha256"]
    return data


def gradient_case():
    """The fixed batch (a partial loss mask: a prompt, padding, every other target) and LoRA adapters on q, v."""
    rng = np.random.default_rng(2024)
    B, T, V = 3, 10, TRAIN_CONFIG["vocab_size"]
    tokens = rng.integers(0, V, (B, T + 1))
    mask = np.ones((B, T))
    mask[0, :3] = 0  # a prompt the loss does not count
    mask[1, 7:] = 0  # padding
    mask[2, ::2] = 0
    tokens[1, 8:] = 0
    dim, kv_dim = TRAIN_CONFIG["dim"], TRAIN_CONFIG["n_kv_heads"] * TRAIN_CONFIG["dim"] // TRAIN_CONFIG["n_heads"]
    adapters = {}
    for i in range(TRAIN_CONFIG["n_layers"]):
        for projection, n_out in zip(LORA_PROJECTIONS, (dim, kv_dim)):
            name = "blk.%d.%s" % (i, projection)
            adapters[name + ".lora_a"] = rng.standard_normal((LORA_RANK, dim)) / np.sqrt(dim)
            adapters[name + ".lora_b"] = 0.5 * rng.standard_normal((n_out, LORA_RANK))  # nonzero: lora_a learns too
    batch = {"ids": tokens[:, :-1].tolist(), "targets": tokens[:, 1:].tolist(), "mask": mask.tolist()}
    return batch, adapters


def test_matmul_beyond_the_wasm32_iterator_limit(browser_python):
    """A 150 x 576 @ 576 x 49152 product (4.2e9 triples; einsum alone refuses 2^31 in wasm32), as the trainer
    and as the engine's layers compute it, equals numpy's `@` natively, exactly: small integer inputs make
    every sum exact in float32."""
    n, k, m = 150, 576, 49152
    got = browser_python.run("large_matmul", n=n, k=k, m=m, seed=3)
    rng = np.random.default_rng(3)
    a = rng.integers(-2, 3, (n, k)).astype(np.float32)
    b = rng.integers(-2, 3, (k, m)).astype(np.float32)
    digest = browser_checks._sha256(a @ b)
    assert got == {"einsum": True, "sha256": digest, "sha256_transposed": digest}


def test_trainer_data_files_ship_in_the_wheel(browser_python):
    """pychat_wasm/train/corpus/*.json(l) are installed with the package, and the shipped corpora read the same."""
    import pychat_wasm.train.data as data

    got = browser_python.run("train_package_data")
    assert "site-packages" in got["data_dir"]
    shipped = sorted(p.name for p in Path(data.DATA_DIR).iterdir() if p.suffix in (".json", ".jsonl"))
    assert sorted(got["files"]) == shipped
    for name in shipped:
        assert got["files"][name] == hashlib.sha256((Path(data.DATA_DIR) / name).read_bytes()).hexdigest(), name
    corpus = data.builtin_corpus()
    assert (got["documents"], got["conversations"]) == (len(corpus.documents), len(corpus.conversations))
    assert got["corpus_sha256"] == hashlib.sha256(json.dumps(corpus).encode()).hexdigest()


# (dtype, RoPE tables, relative tolerance). The RoPE tables are float32 cos/sin (layers.rope_angles, as in
# transformers), and numpy's float32 cos/sin in wasm (no SIMD loops) need not be correctly rounded as this
# machine's are: the test allows 1e-6 from the true value there against 2**-23 here. With the native tables
# handed to Pyodide, float64 gradients agree to summation order (einsum there, BLAS here); with its own tables,
# to what those table differences move.
GRADIENT_CASES = {
    "float64-native-rope": ("float64", "native", 1e-10),
    "float64-own-rope": ("float64", "own", 1e-6),
    "float32-own-rope": ("float32", "own", 1e-4),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_training_gradients_match_native(browser_python, case):
    """Loss and every gradient (base weights and LoRA adapters) of a tiny llama from init_params(seed)."""
    from pychat_wasm.model.layers import rope_frequencies
    from pychat_wasm.train import transformer

    dtype, rope, tolerance = GRADIENT_CASES[case]
    cfg = transformer.llama_config(**TRAIN_CONFIG)
    batch, adapters = gradient_case()
    native_rope = transformer._rope_tables(cfg, np.arange(len(batch["ids"][0])))  # float32 cos, sin [T, hd/2]
    lora = {"scale": LORA_SCALE, "adapters": {n: browser_checks.encode_typed(a) for n, a in adapters.items()}}
    given = [browser_checks.encode_typed(t) for t in native_rope] if rope == "native" else None
    got = browser_python.run("train_gradients", config=TRAIN_CONFIG, seed=TRAIN_SEED, dtype=dtype, batch=batch,
                             lora=lora, rope_tables=given)
    assert got["matmul_is_einsum"]  # Pyodide takes products.matmul's einsum route
    # Each runtime's tables against cos/sin of the same float32 angles, computed exactly (float64).
    angles = (np.arange(len(batch["ids"][0]), dtype=np.float32)[:, None]
              * rope_frequencies(cfg.head_dim, cfg.rope_base)[None, :]).astype(np.float64)
    for mine, theirs, exact in zip(got["rope_tables"], native_rope, (np.cos(angles), np.sin(angles))):
        mine = browser_checks.decode_typed(mine)
        assert np.abs(mine - exact).max() <= 1e-6 and np.abs(theirs - exact).max() <= 2 ** -23

    params = transformer.init_params(cfg, TRAIN_SEED, dtype=np.dtype(dtype).type)
    # The same initial weights bit for bit: Pyodide's numpy has the same PCG64 + standard_normal stream.
    assert got["init_digests"] == {name: browser_checks._sha256(p) for name, p in params.items()}
    params.update({name: a.astype(dtype) for name, a in adapters.items()})
    loss, grads = transformer.loss_and_grads(cfg, params, np.array(batch["ids"]), np.array(batch["targets"]),
                                             np.array(batch["mask"], dtype), LORA_SCALE)
    assert abs(got["loss"] - loss) / abs(loss) < tolerance
    assert sorted(got["grads"]) == sorted(grads) == sorted(params)  # every parameter, adapters included
    errors = {}
    for name, expected in grads.items():
        assert expected.dtype == np.dtype(dtype) and got["grad_dtypes"][name] == expected.dtype.str, name
        errors[name] = rel_err(browser_checks.decode_typed(got["grads"][name]), expected)
    worst = max(errors, key=errors.get)
    assert errors[worst] < tolerance, "largest relative error: %s %.3g; all: %s" % (worst, errors[worst], errors)


BPE_CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!",
    "low lower lowest newer newest wider widest " * 3,
    "Numbers: 12345 and 2024-06-01, 3.14159, 1,000,000 and 007.",
    "<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\nI am fine, thanks.<|im_end|>\n",
    "Ünïcödé wörds: naïve café, Ærø, 北京是中国的首都。 emoji 🙂🚀🙂🚀",
    "def train(x):\n\treturn x  +   y * 2\n\n    # comment   trailing   ",
    "don't won't it's we'll they've I'm you'd",
    "<|endoftext|>Another document after a special token<|endoftext|>",
]


@pytest.mark.parametrize("vocab_size,min_frequency", [(3 + 256 + 120, 2), (3 + 256 + 400, 1)])
def test_bpe_training_matches_native(browser_python, vocab_size, min_frequency):
    from pychat_wasm.train.bpe import train_bpe

    got = browser_python.run("bpe_train", texts=BPE_CORPUS, vocab_size=vocab_size, min_frequency=min_frequency)
    expected = train_bpe(BPE_CORPUS, vocab_size, min_frequency=min_frequency)
    assert len(expected.merges) > 50
    assert got["merges"] == expected.merges
    assert got["tokens"] == expected.tokens
    assert got["token_types"] == expected.token_types


def writer_spec(alignment: int) -> dict:
    """A GGUF file with metadata of every type GGUFWriter writes and F32 / F16 / Q8_0 tensors with edge cases."""
    rng = np.random.default_rng(99)
    f16_edges = np.array([0.0, -0.0, 1.0, -2.0, 65504.0, -65504.0, 6.1e-5, 5.96e-8, 3e-8, 1e-9,
                          1.0009765625, 1.00048828125, 1.00146484375, 0.1, 1 / 3, 2049.0, 2051.0, -7.5e-6],
                         np.float32)
    q8_rows = (rng.standard_normal((6, 96)) * 3).astype(np.float32)
    q8_rows[1] = 0  # all-zero blocks: d = 0
    q8_rows[2, :32] = np.arange(32) - 16.5  # halves
    q8_rows[2, 32:64] = np.linspace(-127, 127, 32) * np.float32(1e-3)
    q8_rows[3] *= np.float32(1e-38)  # 1/d overflows: ggml's undefined case, encoded as zeros
    q8_rows[4] *= np.float32(1e5)
    q8_rows[5, :32] = 0.5
    tensors = [
        ["f32_matrix", rng.standard_normal((3, 5)).astype(np.float32), "F32"],
        ["f32_vector", np.array([0.0, -0.0, 1e-45, -3.4e38, 1.5, 2 ** -126], np.float32), "F32"],
        ["f32_4d", rng.standard_normal((2, 3, 2, 4)).astype(np.float32), "F32"],
        ["f16_edges", np.concatenate([f16_edges, rng.standard_normal(14).astype(np.float32)]).reshape(4, 8), "F16"],
        ["f16_3d", rng.standard_normal((2, 2, 6)).astype(np.float32), "F16"],
        ["q8_0_rows", q8_rows, "Q8_0"],
        ["q8_0_vector", (rng.standard_normal(64) * 0.02).astype(np.float32), "Q8_0"],
    ]
    metadata = [
        ["add_uint32", "test.uint32", 4000000000], ["add_uint32", "test.uint32_zero", 0],
        ["add_int32", "test.int32", -2000000000], ["add_uint64", "test.uint64", 2 ** 64 - 3],
        ["add_float32", "test.float32", 0.1], ["add_float32", "test.float32_neg", -1.25e-30],
        ["add_bool", "test.true", True], ["add_bool", "test.false", False],
        ["add_string", "test.string", "héllo, 世界 🙂\n\t\"quoted\""], ["add_string", "test.empty", ""],
        ["add_array", "test.array_string", ["a", "", "ü", "<|im_end|>", "Ġhello"], "STRING"],
        ["add_array", "test.array_int32", [1, -2, 2 ** 31 - 1, -2 ** 31], "INT32"],
        ["add_array", "test.array_uint32", [0, 7, 2 ** 32 - 1], "UINT32"],
        ["add_array", "test.array_float32", [0.5, -1.5, 1e-7, 3.4e38], "FLOAT32"],
        ["add_array", "test.array_empty", [], "INT32"],
        ["add_array", "test.array_empty_strings", [], "STRING"],
    ]
    return {"arch": "llama", "alignment": alignment, "metadata": metadata,
            "tensors": [[name, browser_checks.encode_typed(a), kind] for name, a, kind in tensors]}


@pytest.mark.parametrize("alignment", [32, 64])
def test_gguf_writer_bytes_match_native(browser_python, tmp_path, alignment):
    spec = writer_spec(alignment)
    spec_json = json.dumps(spec)
    got = browser_python.run("gguf_write", spec_json=spec_json)
    expected = browser_checks.write_gguf_spec(json.loads(spec_json))
    assert (got["length"], got["sha256"]) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert decode_bytes(got) == expected

    # And the native file is what the spec says, by gguf-py's independent reader.
    path = tmp_path / "written.gguf"
    path.write_bytes(expected)
    reader = gguf.GGUFReader(str(path))
    values = {field.name: field.contents() for field in reader.fields.values()}
    for entry in spec["metadata"]:
        key, value = entry[1], entry[2]
        if isinstance(value, float) or (isinstance(value, list) and entry[3] == "FLOAT32"):
            np.testing.assert_array_equal(np.float32(values[key]), np.float32(value))
        else:
            assert values[key] == value, key
    tensors = {t.name: t for t in reader.tensors}
    for name, encoded, kind in spec["tensors"]:
        original = browser_checks.decode_typed(encoded)
        tensor = tensors[name]
        assert tensor.tensor_type.name == kind
        assert [int(d) for d in reversed(tensor.shape)] == list(original.shape)
        with np.errstate(all="ignore"):  # gguf-py meets the 1/d overflow of the 1e-38 row too
            reference = gguf.quants.quantize(original, tensor.tensor_type)
        assert np.asarray(tensor.data).tobytes() == reference.tobytes(), name  # gguf-py's own encoding


def scratch_data():
    """A small fixed slice of the shipped corpus: documents and chats, enough for validation splits."""
    from pychat_wasm.train.data import builtin_corpus

    corpus = builtin_corpus()
    return {"documents": corpus.documents[:40], "conversations": corpus.conversations[:40]}


def test_scratch_run_matches_native(browser_python, capsys):
    """ScratchRun in Pyodide: same tokenizer, same 8 losses, a checkpoint that resumes natively, an export
    that loads natively with the native run's tensors."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.gguf.quants import dequantize
    from pychat_wasm.train.checkpoint import read_checkpoint, restore
    from pychat_wasm.train.data import TrainingData
    from pychat_wasm.train.scratch import ScratchRun, TrainSettings

    data = scratch_data()
    got = browser_python.run("scratch_run", data_json=json.dumps(data), steps=SCRATCH_STEPS,
                             checkpoint_at=SCRATCH_CHECKPOINT_AT, timeout_s=SCRATCH_TIMEOUT_S)
    training_data = TrainingData(data["documents"], data["conversations"])
    run = ScratchRun.create(TrainSettings(preset="quick", steps=SCRATCH_STEPS), training_data)
    assert got["vocabulary"] == run.vocabulary._asdict()
    assert got["fingerprint"] == run.fingerprint()  # the same examples, phases and batches plan
    assert got["phases"] == [[p.name, p.steps, len(p.examples), len(p.validation)] for p in run.phases]
    assert [p.name for p in run.phases] == ["pretrain", "chat"]
    expected = []
    for _ in range(SCRATCH_STEPS):
        expected.append(run.step())
    assert [r["step"] for r in got["records"]] == list(range(1, SCRATCH_STEPS + 1))
    for mine, theirs in zip(got["records"], expected):
        assert mine["phase"] == theirs["phase"] and mine["tokens"] == theirs["tokens"]
        assert mine["lr"] == theirs["lr"]
        for key in ("loss", "grad_norm"):
            assert abs(mine[key] - theirs[key]) / abs(theirs[key]) < TRAIN_TOLERANCE, (mine["step"], key)
        assert (mine.get("validation") is None) == (theirs.get("validation") is None)
        if theirs.get("validation"):
            assert abs(mine["validation"]["loss"] / theirs["validation"]["loss"] - 1) < TRAIN_TOLERANCE
    assert sum(1 for r in expected if r.get("validation")) == 2  # the end of each phase

    # The Pyodide checkpoint, resumed natively, continues to the native run's numbers.
    saved = read_checkpoint(decode_bytes(got["checkpoint"]))
    assert saved.kind == "scratch" and saved.step == SCRATCH_CHECKPOINT_AT
    resumed = ScratchRun.from_checkpoint(saved.extra, saved.params, training_data)
    restore(resumed, saved)
    assert all(p.dtype == np.float32 for p in resumed.params.values())
    tail = [resumed.step() for _ in range(SCRATCH_STEPS - SCRATCH_CHECKPOINT_AT)]
    assert resumed.finished
    for mine, theirs in zip(tail, expected[SCRATCH_CHECKPOINT_AT:]):
        assert mine["step"] == theirs["step"]
        assert abs(mine["loss"] - theirs["loss"]) / abs(theirs["loss"]) < TRAIN_TOLERANCE
    assert_trained_close(resumed.params, run.params)

    # The Pyodide export loads natively: the native export's metadata and layout, the native run's tensors.
    exported = GGUFFile(np.frombuffer(decode_bytes(got["gguf"]), np.uint8))
    native = GGUFFile(np.frombuffer(run.gguf_writer().to_bytes(), np.uint8))
    assert exported.metadata == native.metadata
    assert {n: (t.shape, t.type_id) for n, t in exported.tensors.items()} == \
        {n: (t.shape, t.type_id) for n, t in native.tensors.items()}
    assert_trained_close({name: dequantize(exported.tensor_bytes(name), info.type_id, info.shape)
                          for name, info in exported.tensors.items()}, run.params)

    pyodide_step = np.array([r["seconds"] for r in got["records"]])
    native_step = np.array([r["seconds"] for r in expected])
    with capsys.disabled():  # Pyodide is single-threaded: compare with OPENBLAS_NUM_THREADS=1 for a fair ratio
        print("\nscratch run (preset quick, %d steps): Pyodide %.3f s/step (median %.3f), native %.4f s/step "
              "(median %.4f, OPENBLAS_NUM_THREADS=%s): %.1fx; ScratchRun.create %.2f s in Pyodide"
              % (SCRATCH_STEPS, pyodide_step.mean(), np.median(pyodide_step), native_step.mean(),
                 np.median(native_step), os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
                 np.median(pyodide_step) / np.median(native_step), got["create_seconds"]))


WORKER_FILES = [
    {"name": "notes.txt", "text": "Cats purr when they are content.\nThe sun rises in the east.\n"
                                  "Water boils at one hundred degrees Celsius at sea level.\n"
                                  "Bees make honey from nectar.\nUser: Hi! Assistant: Hello there.\n"},
    {"name": "chats.jsonl", "text": "\n".join(json.dumps({"messages": m}) for m in [
        [{"role": "user", "content": "What do bees make?"}, {"role": "assistant", "content": "Honey."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where does the sun rise?"},
         {"role": "assistant", "content": "In the east."}],
        [{"role": "user", "content": "Do cats purr?"}, {"role": "assistant", "content": "Yes, when content."}],
    ])},
]
WORKER_OPTIONS = {"preset": "quick", "steps": 40, "seed": 3, "name": "pyodide-test"}  # not finished in 3 slices


def test_training_worker_api_in_pyodide(browser_python):
    """pychat_wasm.browser.train_worker as the training worker calls it: ok JSON, typed errors, and the same
    model as the same calls natively."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.browser import train_worker as api

    files_json, bad_json = json.dumps(WORKER_FILES), json.dumps([{"name": "bad.json", "text": "[1, 2"}])
    got = browser_python.run("training_worker_api", options_json=json.dumps(WORKER_OPTIONS), files_json=files_json,
                             bad_files_json=bad_json, slices=3, seconds=0.2)
    for key in ("limits", "describe", "begin", "train", "after_bad"):
        for reply in got["train"] if key == "train" else [got[key]]:
            assert reply["ok"] is True, (key, reply)
    assert got["limits"] == json.loads(api.limits())
    assert got["describe"] == json.loads(api.describe_files(files_json))
    assert got["begin"]["total_steps"] == WORKER_OPTIONS["steps"] and got["begin"]["step"] == 0
    assert got["begin"]["data"] == {"documents": 4, "conversations": 4}
    records = [r for reply in got["train"] for r in reply["records"]]
    assert all(reply["records"] for reply in got["train"])  # every slice makes progress
    steps_done = got["train"][-1]["step"]
    assert [r["step"] for r in records] == list(range(1, steps_done + 1))
    for bad in ("bad_describe", "bad_begin"):
        assert got[bad]["ok"] is False
        assert got[bad]["error"]["type"] == "TrainingDataError"
        assert "bad.json" in got[bad]["error"]["message"]
    # A refused start leaves the run in memory as it was: its next step is step steps_done + 1, as natively.
    assert [r["step"] for r in got["after_bad"]["records"]] == [steps_done + 1]

    # The same calls natively: the same losses and the same model.
    try:
        begin = json.loads(api.begin_training(json.dumps(WORKER_OPTIONS), files_json))
        assert {k: v for k, v in begin.items() if k != "log"} == {k: v for k, v in got["begin"].items() if k != "log"}
        native = [json.loads(api.train_for(0.0))["records"][0] for _ in range(steps_done)]
        for mine, theirs in zip(records, native):
            assert mine["step"] == theirs["step"]
            assert abs(mine["loss"] - theirs["loss"]) / theirs["loss"] < TRAIN_TOLERANCE
        model = GGUFFile(np.frombuffer(decode_bytes(got["model"]), np.uint8))
        expected = GGUFFile(np.frombuffer(api.model_bytes(), np.uint8))
        assert model.metadata == expected.metadata and model.metadata["general.name"] == "pyodide-test"
        assert_trained_close({name: model.tensor_bytes(name).view(np.float32) for name in model.tensors},
                             {name: expected.tensor_bytes(name).view(np.float32) for name in expected.tensors})
        next_step = json.loads(api.train_for(0.0))["records"][0]
        mine = got["after_bad"]["records"][0]
        assert abs(mine["loss"] - next_step["loss"]) / next_step["loss"] < TRAIN_TOLERANCE
    finally:
        api._training.run = None


FINETUNE_SETTINGS = {"rank": 4, "alpha": 8.0, "targets": "attn", "epochs": 2, "lr": 1e-3, "seq_len": 32,
                     "batch_size": 2, "seed": 1}
# The tiny model's vocabulary spells no text (its 93 normal tokens are "tok3".."tok95", with no byte tokens), so
# these conversations are written in its special tokens, which the tokenizer parses in chat text.
FINETUNE_CONVERSATIONS = [
    [{"role": "user", "content": "<s><unk><s>"}, {"role": "assistant", "content": "<unk><s><unk></s>"}],
    [{"role": "user", "content": "<unk>"}, {"role": "assistant", "content": "<s><s><unk><unk><s>"}],
    [{"role": "system", "content": "<s>"}, {"role": "user", "content": "<s><s>"},
     {"role": "assistant", "content": "<unk></s>"}],
    [{"role": "user", "content": "<unk><unk>"}, {"role": "assistant", "content": "<s><unk><s><unk>"}],
]
FINETUNE_STEPS = 2


@pytest.mark.filterwarnings("ignore:unknown pre-tokenizer")  # the tiny model names none
def test_finetune_lora_matches_native(browser_python, tiny_models):
    """FinetuneRun on the tiny llama GGUF: the same adapters, step losses, LoRA gradients on a batch over the
    whole vocabulary, merged parameters and export."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.train import transformer
    from pychat_wasm.train.data import TrainingData
    from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings

    rng = np.random.default_rng(31)
    tokens = rng.integers(0, TINY_SPECS["llama"].vocab_size, (2, 13))
    mask = np.ones((2, 12))
    mask[0, :4] = 0
    mask[1, 9:] = 0
    batch = {"ids": tokens[:, :-1].tolist(), "targets": tokens[:, 1:].tolist(), "mask": mask.tolist()}
    got = browser_python.run("finetune_lora", file="tiny_llama.gguf", settings=FINETUNE_SETTINGS,
                             conversations=FINETUNE_CONVERSATIONS, steps=FINETUNE_STEPS, batch=batch)

    run = FinetuneRun(FinetuneSettings(**FINETUNE_SETTINGS), GGUFFile.open(str(tiny_models["llama"][0])),
                      TrainingData([], FINETUNE_CONVERSATIONS))
    assert got["examples"] == [list(map(list, e)) for e in run.phases[0].examples]
    assert got["initial_adapter_digests"] == {n: browser_checks._sha256(run.params[n]) for n in sorted(run.trainable)}
    expected = [run.step() for _ in range(FINETUNE_STEPS)]
    for mine, theirs in zip(got["records"], expected):
        assert abs(mine["loss"] - theirs["loss"]) / theirs["loss"] < TRAIN_TOLERANCE
    assert_trained_close({name: browser_checks.decode_typed(a) for name, a in got["adapters"].items()},
                         {name: run.params[name] for name in run.trainable})
    assert any(np.abs(run.params[n]).max() > 0 for n in run.trainable if n.endswith(".lora_b"))  # trained

    loss, grads = transformer.loss_and_grads(run.config, run.params, tokens[:, :-1], tokens[:, 1:],
                                             mask.astype(np.float32), run.lora_scale, run.trainable)
    assert abs(got["loss"] - loss) / loss < TRAIN_TOLERANCE
    assert sorted(got["grads"]) == sorted(grads) == sorted(run.trainable)  # the adapters only
    for name, expected_grad in grads.items():
        assert np.abs(expected_grad).max() > 0, name
        error = rel_err(browser_checks.decode_typed(got["grads"][name]), expected_grad)
        assert error < TRAIN_TOLERANCE, "%s: relative error %.3g" % (name, error)

    merged = run.merged_parameters()
    assert all(a["dtype"] == "<f4" for a in got["merged"].values())
    assert_trained_close({name: browser_checks.decode_typed(a) for name, a in got["merged"].items()}, merged)
    exported = GGUFFile(np.frombuffer(decode_bytes(got["gguf"]), np.uint8))
    assert {k: v for k, v in exported.metadata.items()} == \
        dict(GGUFFile(np.frombuffer(run.gguf_writer().to_bytes(), np.uint8)).metadata)
    for name, info in exported.tensors.items():
        np.testing.assert_array_equal(exported.tensor_bytes(name).view(np.float32).reshape(info.shape),
                                      browser_checks.decode_typed(got["merged"][name]))



def test_grammar_matches_like_llama_cpp(browser_python):
    """llama.cpp's grammar integration cases (tests/oracle/test_grammar_llama_cpp.py) inside Pyodide."""
    from llama_cpp_grammar_cases import integration_cases

    cases = [c for c in integration_cases() if c["kind"] == "grammar"
             and all(isinstance(p, str) for s in c["passing"] + c["failing"] for p in s)]
    assert len(cases) >= 10
    got = browser_python.run("grammar_matches", cases=[
        (c["source"], ["".join(s) for s in c["passing"] + c["failing"]]) for c in cases])
    for case, matched in zip(cases, got):
        assert matched == [True] * len(case["passing"]) + [False] * len(case["failing"]), case["name"]


def test_grammar_masks_match_native(browser_python, smollm2_path):
    """Masks over SmolLM2's vocabulary under a GBNF grammar and a JSON schema, step by step, as computed natively
    (where test_grammar_constraint.py checks them against the regex package)."""
    from pychat_wasm.grammar import Grammar, GrammarConstraint, schema_to_gbnf
    from pychat_wasm.tokenizers import load_tokenizer

    tok = load_tokenizer(str(smollm2_path))
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer", "maximum": 99}},
              "required": ["name", "n"], "additionalProperties": False}
    cases = [{"gbnf": 'root ::= "café " [^\\n]* "🙂"', "ids": tok.encode("café au lait 🙂", add_special=False)},
             {"schema": schema, "ids": tok.encode('{"name": "Ana \\"A\\"", "n": 42}', add_special=False)}]
    got = browser_python.run("grammar_walks", cases=cases)
    for case, result in zip(cases, got):
        text = case["gbnf"] if "gbnf" in case else schema_to_gbnf(case["schema"])
        constraint = GrammarConstraint(Grammar.parse(text), tok)
        expected = []
        for token in case["ids"]:
            expected.append(browser_checks.ids_digest(np.flatnonzero(constraint.allowed_mask())))
            constraint.accept(token)
        assert result == {"digests": expected, "can_end": constraint.can_end}
        assert result["can_end"]
