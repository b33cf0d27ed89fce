"""Build the pychat-wasm wheel that the browser worker installs into Pyodide.

The wheel is pure Python (numpy, Jinja2 and MarkupSafe are served beside it: build/browser_packages.py),
so it is built once with pip and served next to the Pyodide files. The build runs on a copy of the package sources in
a scratch directory, so it never writes `build/` or `*.egg-info` into the working tree and two builds
running at the same time cannot trip over each other.

    $ python build/wheel.py build/out
    build/out/pychat_wasm-0.1.0-py3-none-any.whl
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "pychat_wasm"]


def build_wheel(out_dir: Path) -> Path:
    """Build the wheel into `out_dir` and return its path (no network: no build isolation)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pychat-wheel-") as scratch:
        src = Path(scratch) / "src"
        src.mkdir()
        for name in SOURCES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif path.exists():
                shutil.copy2(path, src / name)
        if not (src / "README.md").exists():  # pyproject names a readme; setuptools refuses to build without it
            (src / "README.md").write_text("pychat-wasm\n")
        built = Path(scratch) / "dist"
        subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(built)], check=True)
        (wheel,) = built.glob("pychat_wasm-*.whl")
        target = out_dir / wheel.name
        shutil.copy2(wheel, target)
    return target


if __name__ == "__main__":
    print(build_wheel(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "out"))
