"""Shared fixtures: the real models the set-up installs, and Chromium launch settings.

The tests are a map of the engine: unit/ (behaviour, no outside reference), oracle/ (checked against
transformers, torch, gguf-py, HF tokenizers, llama.cpp), browser/ (the built site in Chromium and the engine
inside Pyodide); support/ holds what they share (tiny models, the hostile server, the Pyodide harness),
importable by name from every test (and only it: no test imports another).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
sys.path.insert(0, str(REPO / "tests" / "support"))  # what tests share is importable by name; no test imports another
SMOLLM2 = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = MODELS / "gemma-3-270m-Q4_K_M.gguf"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def _model(path: Path) -> Path:
    if not path.exists():
        pytest.fail("%s is missing: run scripts/setup.sh (it installs the test models)" % path)
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return _model(SMOLLM2)


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    return _model(GEMMA3)


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_path):
    """transformers' conversion of the file's tokenizer: the independent reference for ids and templates."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)


@pytest.fixture(scope="session")
def hf_smollm2_model(smollm2_path):
    """transformers' own model, loaded (dequantized to float32) from the same GGUF file."""
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name,
                                                             dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """arch -> (path of its tiny random GGUF model, transformers' logits [len(TINY_TOKENS), vocab])."""
    from tiny_models import TINY_SPECS, TINY_TOKENS, transformers_logits, write_tiny_model

    directory = tmp_path_factory.mktemp("tiny_models")
    paths = {arch: write_tiny_model(directory / (arch + ".gguf"), arch) for arch in sorted(TINY_SPECS)}
    return {arch: (path, transformers_logits(path, TINY_TOKENS)) for arch, path in paths.items()}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright: use Debian's Chromium (playwright cannot download browsers here)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="module")
def site(tmp_path_factory, smollm2_path):
    """The site built from this checkout as build/build_site.py builds dist/site/: one copy per test module,
    which that module may change (test_e2e rewrites its service worker)."""
    from e2e_helpers import load_build_module

    out = tmp_path_factory.mktemp("site") / "site"
    load_build_module("build_site").build_site(out, smollm2_path)
    return out


@pytest.fixture(scope="module")
def server(site):
    """The module's site served on 127.0.0.1 (with HTTP Range, and the faults a test stages)."""
    from e2e_helpers import SiteServer

    server = SiteServer(site)
    yield server
    server.stop()


@pytest.fixture
def fresh_context(browser):
    """A browser context of its own for one test: a first visit (no storage, caches or service worker)."""
    from e2e_helpers import new_context

    with new_context(browser) as context:
        yield context
