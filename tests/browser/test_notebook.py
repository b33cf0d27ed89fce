"""A notebook user installs the engine from the built site with micropip and chats with it from a cell.

Two origins on 127.0.0.1, as a JupyterLite deployment and our site are: the notebook host
(tests/support/notebook_host/: a page whose worker runs a bare Pyodide 0.27.7 — the site's own copy of it —
with micropip loaded, and none of the product's code) and the site built from this checkout, served by
build/serve.py. The cells are the ones docs/browser.md shows: `micropip.install(<the site's wheel URL>)`, which
resolves numpy from Pyodide's lock file, then `from pychat_wasm import LLM` on the model fetched from the site.
The answer must be SmolLM2's greedy answer as transformers and llama.cpp give it (texts.GOLDEN_ANSWER), the
same as the engine natively, with transformers' prompt token count. Nothing may be fetched from anywhere else.

The test's Pyodide holds numpy only (npm's pyodide is the core; numpy is the one package the site copies), so
Jinja2 and MarkupSafe, which a full Pyodide distribution (its CDN, JupyterLite) serves, are installed first
from the site's copies of them. micropip is its PyPI wheel of the version 0.27.7's lock file names
(build/browser_packages.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from e2e_helpers import REPO, RecordingHandler, SiteServer, load_build_module  # tests/support/e2e_helpers.py
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION  # tests/support/texts.py

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK_HOST = REPO / "tests" / "support" / "notebook_host"
PYODIDE_LOCK = REPO / "node_modules" / "pyodide" / "pyodide-lock.json"
START_TIMEOUT_MS = 90_000
CELL_TIMEOUT_MS = 240_000  # a model download into the wasm heap and a load on 2 busy cores
MESSAGES = [{"role": "user", "content": GOLDEN_QUESTION}]
SETTINGS = dict(temperature=0, max_tokens=8)


class HostHandler(RecordingHandler):
    """A plain static host, as a notebook deployment is: none of the site's policy or isolation headers."""

    def content_security_policy(self, name):
        return None

    def isolation_headers(self):
        return ()


@pytest.fixture(scope="module")
def host(tmp_path_factory, site):
    """The notebook host: its page and kernel, the site's Pyodide files (a distribution holding numpy) and
    micropip's wheel."""
    root = tmp_path_factory.mktemp("notebook_host")
    for path in NOTEBOOK_HOST.iterdir():
        shutil.copy(path, root)
    shutil.copytree(site / "pyodide", root / "pyodide")
    shutil.copy(load_build_module("browser_packages").micropip_wheel(), root)
    server = SiteServer(root, handler=HostHandler)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def notebook(browser, host, server):
    """A started kernel; `outside` lists every request to neither server (each is refused)."""
    context = browser.new_context()
    outside = []

    def only_ours(route):
        if route.request.url.startswith((host.url, server.url)):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_ours)  # the kernel worker's requests too
    page = context.new_page()
    page.goto(host.url + "index.html")
    micropip = load_build_module("browser_packages").MICROPIP_WHEEL
    version = call(page, "start", {"indexURL": host.url + "pyodide/", "packageURLs": [host.url + micropip]},
                   START_TIMEOUT_MS)
    assert version == "0.27.7"
    yield page, outside
    context.close()


def call(page, method: str, argument, timeout_ms: int):
    """notebook[method](argument) in the page, rejected after `timeout_ms` (Pyodide can hang silently)."""
    script = """([method, argument, ms]) => Promise.race([window.notebook[method](argument),
        new Promise((_, reject) => setTimeout(() => reject(new Error("timed out after " + ms + " ms")), ms))])"""
    return page.evaluate(script, [method, argument, timeout_ms])


def run_cell(page, code: str):
    """Run `code` as a notebook cell; its last expression is a JSON string, returned decoded."""
    return json.loads(call(page, "cell", code, CELL_TIMEOUT_MS))


def site_wheels(site: Path):
    """The URLs (relative to the site) of the dependency wheels and of the engine's wheel, from the manifest."""
    urls = json.loads((site / "manifest.json").read_text())["boot"]["wheelURLs"]
    return urls[:-1], urls[-1]


def test_a_notebook_cell_installs_the_wheel_and_chats(notebook, site, server, host, smollm2_path,
                                                      hf_smollm2_tokenizer):
    from pychat_wasm import LLM

    page, outside = notebook
    dependencies, engine = site_wheels(site)
    # What a full Pyodide distribution would serve; this one holds numpy only.
    run_cell(page, "import micropip\nawait micropip.install(%r)\n'null'" % [server.url + url for url in dependencies])
    assert not run_cell(page, "import json, sys\njson.dumps('numpy' in sys.modules)")

    installed = run_cell(page, """
import micropip
await micropip.install(%r)
from pychat_wasm import LLM
import importlib.util, json
json.dumps({"packages": {name: [p.version, p.source] for name, p in micropip.list().items()},
            "server_extra": [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name)]})
""" % (server.url + engine))
    version = engine.split("-")[1]
    assert installed["packages"]["pychat-wasm"] == [version, server.url + engine]
    numpy = json.loads(PYODIDE_LOCK.read_text())["packages"]["numpy"]
    assert installed["packages"]["numpy"] == [numpy["version"], "pyodide"]  # resolved from Pyodide's lock file,
    assert "/pyodide/" + numpy["file_name"] in [entry["path"] for entry in host.log]  # and fetched from the host
    assert installed["server_extra"] == []

    model = "models/" + smollm2_path.name
    reply = run_cell(page, """
from pyodide.http import pyfetch
response = await pyfetch(%r)
with open("smollm2.gguf", "wb") as fh:
    fh.write(await response.bytes())
llm = LLM("smollm2.gguf")
json.dumps(llm.create_chat_completion(messages=%r, **%r))
""" % (server.url + model, MESSAGES, SETTINGS))

    native = LLM(str(smollm2_path)).create_chat_completion(messages=MESSAGES, **SETTINGS)
    assert reply["choices"][0]["message"] == native["choices"][0]["message"] == {
        "role": "assistant", "content": GOLDEN_ANSWER}
    assert reply["choices"][0]["finish_reason"] == "stop"
    prompt = hf_smollm2_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    assert reply["usage"]["prompt_tokens"] == len(getattr(prompt, "input_ids", prompt))  # a BatchEncoding or ids
    assert outside == []
