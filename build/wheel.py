"""Build the pychat-wasm wheel that the browser worker installs into Pyodide.

The wheel is pure Python (numpy, Jinja2 and MarkupSafe are served beside it: build/browser_packages.py),
so it is built once with pip and served next to the Pyodide files. The build runs on a copy of the package sources in
a scratch directory, so it never writes `build/` or `*.egg-info` into the working tree and two builds
running at the same time cannot trip over each other.

The wheel is reproducible: pip's zip carries the build time and the file system's order, so it is rewritten
with its entries sorted (the .dist-info last, RECORD at the very end), every timestamp set to
SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/; 1980-01-01, the zip epoch, when
unset), mode 0644 and one compression level. The same sources give the same bytes, hence the same build id.

    $ python build/wheel.py build/out
    build/out/pychat_wasm-0.1.0-py3-none-any.whl
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "pychat_wasm"]
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r--, in the zip's external attributes


def fixed_timestamp() -> tuple:
    """The zip date_time every entry gets: SOURCE_DATE_EPOCH (UTC) if set, else the zip epoch."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return ZIP_EPOCH
    return max(ZIP_EPOCH, tuple(time.gmtime(int(epoch))[:6]))


def entry_order(name: str) -> tuple:
    """Package files first, then the .dist-info, RECORD last (where installers expect it)."""
    return (".dist-info/" in name, name.endswith(".dist-info/RECORD"), name)


def rewrite_reproducibly(source: Path, target: Path) -> None:
    """Copy the wheel `source` to `target` with sorted entries, fixed timestamps, modes and compression."""
    date_time = fixed_timestamp()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in sorted(src.namelist(), key=entry_order):
            info = zipfile.ZipInfo(name, date_time)
            info.external_attr = FILE_MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, src.read(name), compresslevel=9)


def build_wheel(out_dir: Path, sources: Path = REPO) -> Path:
    """Build the wheel from the checkout `sources` into `out_dir` and return its path (no network: no build
    isolation)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pychat-wheel-") as scratch:
        src = Path(scratch) / "src"
        src.mkdir()
        for name in SOURCES:
            path = Path(sources) / name
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
        rewrite_reproducibly(wheel, target)
    return target


if __name__ == "__main__":
    print(build_wheel(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "out"))
