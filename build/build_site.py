"""Assemble the static site in dist/site/: app shell, the Pyodide files that run, our wheel, the default model.

    dist/site/
      index.html app.js worker.js sw.js ...   the app shell (from web/)
      pyodide/                                 Pyodide 0.27.7's core files that run + its numpy 2.0.2 wheel
      wheels/                                  Jinja2, MarkupSafe (plain Python) and the engine built from
                                               this checkout (pychat_wasm-*.whl): see build/browser_packages.py
      vendor/                                  marked, DOMPurify, pdf.js (npm) with their licences: VENDOR_FILES
      models/SmolLM2-135M-Instruct.Q4_1.gguf   the default model (and the catalog's other own files)
      models.json                              the model catalog, checked (build/model_catalog.py)
      manifest.json                            what the page and its service worker read (see build_site),
                                               and the size and sha256 of every file above

The service worker precaches everything the manifest lists under `precache` in a cache named after the
build id (a hash of all files' contents), so any change to the site replaces the old cache, and a rebuild
of unchanged sources keeps it: the build is reproducible (build/wheel.py writes the wheel with fixed
timestamps and order; the manifest holds no build time). The model is not
precached: the page downloads it with resume and keeps it in IndexedDB.

A model host of another origin must be listed (`--model-origin https://huggingface.co`, repeatable, with the
origins its redirects lead to): the origins go into the Content-Security-Policy's connect-src (build/serve.py's
page_policy, written into index.html's <meta> tag here and sent as a header by serve.py), into sw.js and into
manifest.json's "model_origins", which the page checks a model URL against before any request.

    $ python build/build_site.py [--model path/to/model.gguf] [--out dist/site] [--model-origin ORIGIN ...]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pychat_wasm.gguf.reader import GGUFFile  # noqa: E402
from pychat_wasm.model.info import model_info  # noqa: E402
from pychat_wasm.browser.protocol import page_manifest  # noqa: E402

WEB = REPO / "web"
OUT = REPO / "dist" / "site"
DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"  # scripts/fetch_models.py says where from

PYODIDE_PACKAGE = REPO / "node_modules" / "pyodide"
PYODIDE_VERSION = "0.27.7"  # pinned in package.json; checked against the installed package
# What a classic worker fetches to boot (pyodide.mjs and the .d.ts/.map files are for other set-ups).
PYODIDE_CORE = ["pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]
PYODIDE_DIR = "pyodide/"  # the site's folder of PYODIDE_CORE and the numpy wheel: the workers' indexURL
# Browser libraries from npm, pinned in package.json and checked against node_modules: the page runs them from
# vendor/ (offline, and under its script-src 'self'), each beside its licence. marked renders the answers'
# Markdown, DOMPurify sanitizes the result (web/markdown.js); pdf.js (ES modules: the library and its worker)
# reads the text of attached PDFs (web/pdf_text.js).
VENDOR_DIR = "vendor/"
VENDOR_FILES = {  # npm package -> {file in the package: its name in vendor/}
    "marked": {"lib/marked.umd.js": "marked.umd.js", "LICENSE": "marked.LICENSE.txt"},
    "dompurify": {"dist/purify.min.js": "purify.min.js", "LICENSE": "dompurify.LICENSE.txt",
                  "LICENSE-MPL": "dompurify.LICENSE-MPL.txt"},
    "pdfjs-dist": {"build/pdf.min.mjs": "pdf.min.mjs", "build/pdf.worker.min.mjs": "pdf.worker.min.mjs",
                   "LICENSE": "pdfjs.LICENSE.txt"},
}
SERVICE_WORKER = "sw.js"
SW_VERSION_PLACEHOLDER = "__BUILD_ID__"


def load_build_module(name: str):
    """build/<name>.py by path: a plain `import wheel` would find the PyPI package of that name."""
    spec = importlib.util.spec_from_file_location("pychat_build_" + name, REPO / "build" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


browser_packages = load_build_module("browser_packages")
model_catalog = load_build_module("model_catalog")
serve = load_build_module("serve")
sha256_of = browser_packages.sha256_of
CATALOG = WEB / "models.json"
SW_ORIGINS_PLACEHOLDER = "/* __MODEL_ORIGINS__ */"  # in sw.js's MODEL_ORIGINS array


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link big immutable files (no 100 MB copy on every build); copy across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def load_wheel_builder():
    return load_build_module("wheel").build_wheel


def copy_pyodide(out: Path, packages_dir: Optional[Path] = None) -> List[str]:
    """Copy the Pyodide files that run (the core and numpy into pyodide/, Jinja2 and MarkupSafe into wheels/);
    returns the URLs of the wheels, in the order to install them. `packages_dir`: where scripts/setup.sh put the
    packages."""
    package = json.loads((PYODIDE_PACKAGE / "package.json").read_text())
    if package["version"] != PYODIDE_VERSION:
        raise SystemExit("node_modules has pyodide %s, expected %s: run scripts/setup.sh"
                         % (package["version"], PYODIDE_VERSION))
    packages_dir = packages_dir or browser_packages.CACHE
    numpy = browser_packages.locked_numpy(packages_dir)  # checked against node_modules/pyodide/pyodide-lock.json
    for name in PYODIDE_CORE:
        link_or_copy(PYODIDE_PACKAGE / name, out / PYODIDE_DIR / name)
    link_or_copy(numpy["path"], out / PYODIDE_DIR / numpy["path"].name)  # loadPackage("numpy") looks beside the core
    wheel_urls = []
    for _, _, path in browser_packages.python_wheels(packages_dir):
        link_or_copy(path, out / "wheels" / path.name)
        wheel_urls.append("wheels/" + path.name)
    return wheel_urls


def copy_vendor(out: Path) -> List[str]:
    """Copy the browser libraries of VENDOR_FILES into vendor/, each as npm ships it; returns their paths."""
    pins = json.loads((REPO / "package.json").read_text())["dependencies"]
    paths = []
    for name, files in sorted(VENDOR_FILES.items()):
        package_json = REPO / "node_modules" / name / "package.json"
        installed = json.loads(package_json.read_text())["version"] if package_json.exists() else None
        if installed != pins[name]:
            raise SystemExit("node_modules has %s %s, package.json pins %s: run scripts/setup.sh"
                             % (name, installed or "missing", pins[name]))
        for source, target in sorted(files.items()):
            (out / VENDOR_DIR).mkdir(exist_ok=True)
            shutil.copy2(REPO / "node_modules" / name / source, out / VENDOR_DIR / target)  # small: a copy of its own
            paths.append(VENDOR_DIR + target)
    return sorted(paths)


def describe_model(path: Path) -> dict:
    """What the page shows about a model before loading it, besides its size: model_info, as a load reports it
    (architecture, tensor types, ...)."""
    return model_info(GGUFFile.open(str(path)))


def file_entries(out: Path, paths) -> dict:
    return {p: {"size": (out / p).stat().st_size, "sha256": sha256_of(out / p)} for p in paths}


def allow_model_origins(out: Path, origins: List[str]) -> None:
    """The site's index.html <meta> policy and sw.js's list of model origins: `origins` added."""
    index = out / "index.html"
    meta = 'content="%s"'
    html = index.read_text()
    if meta % serve.CONTENT_SECURITY_POLICY not in html:
        raise SystemExit("web/index.html's Content-Security-Policy <meta> tag is not build/serve.py's policy")
    index.write_text(html.replace(meta % serve.CONTENT_SECURITY_POLICY, meta % serve.page_policy(origins)))
    sw = out / SERVICE_WORKER
    sw.write_text(sw.read_text().replace(SW_ORIGINS_PLACEHOLDER, ", ".join(json.dumps(o) for o in origins)))


def add_catalog(out: Path, catalog: Path) -> None:
    """The checked catalog as the site's models.json, and its own model files in the site's models/."""
    entries = model_catalog.load_catalog(catalog, REPO / "models")
    (out / "models.json").write_text(json.dumps(entries, indent=1))
    for path in model_catalog.local_files(entries, REPO / "models"):
        if not (out / "models" / path.name).exists():
            link_or_copy(path, out / "models" / path.name)


def build_site(out: Path = OUT, model: Path = DEFAULT_MODEL, sources: Path = REPO, model_origins=(),
               catalog: Path = CATALOG) -> dict:
    """Build the site into `out` (replacing it) and return the manifest. The engine's wheel is built from the
    checkout `sources`; `model_origins` are the other origins the page may download models from (checked by
    build/model_catalog.py), `catalog` the model catalog. The result is reproducible: the same inputs give
    the same bytes in every file.

    The manifest holds what something reads: build_id (the page's and the update test's build; sw.js's cache
    is named after it), boot (the workers' Pyodide boot request), precache (sw.js), model, model_origins (the
    page's model_origins.js and build/serve.py's policy header), and from
    pychat_wasm/browser/protocol.py sampling_defaults, settings_rules and finetune_defaults (the page's forms),
    pyodide.version (bench/bench_browser.py), and files: the size and sha256
    of every file."""
    if not model.exists():
        raise SystemExit("%s is missing: run scripts/setup.sh (it installs the default model)" % model)
    origins = model_catalog.model_origins(model_origins)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shell = sorted(p.name for p in WEB.iterdir() if p.is_file())
    for name in shell:
        shutil.copy2(WEB / name, out / name)
    dependency_wheels = copy_pyodide(out)
    wheel = load_wheel_builder()(out / "wheels", sources)
    model_path = "models/" + model.name
    link_or_copy(model, out / model_path)
    add_catalog(out, catalog)
    allow_model_origins(out, origins)

    precache = [name for name in shell if name != SERVICE_WORKER]  # the browser keeps the service worker itself
    precache += copy_vendor(out)
    precache += sorted(PYODIDE_DIR + p.name for p in (out / PYODIDE_DIR).iterdir())
    wheel_urls = dependency_wheels + ["wheels/" + wheel.name]  # the engine last, after its dependencies
    precache += wheel_urls
    files = file_entries(out, precache + [model_path, SERVICE_WORKER])
    build_id = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    sw = out / SERVICE_WORKER
    sw.write_text(sw.read_text().replace(SW_VERSION_PLACEHOLDER, build_id))  # a new build is a new service worker
    files.update(file_entries(out, [SERVICE_WORKER]))
    manifest = {
        "build_id": build_id,
        "pyodide": {"version": PYODIDE_VERSION},
        "boot": {"indexURL": PYODIDE_DIR, "wheelURLs": wheel_urls},  # what the workers' boot request sends
        "precache": ["./"] + precache,
        "files": files,
        "model": {"name": model.name, "url": model_path, **files[model_path], "info": describe_model(model)},
        "model_origins": origins,  # web/model_origins.js, build/serve.py
        **page_manifest(),  # sampling_defaults, settings_rules, finetune_defaults: the form's values and bounds
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Assemble the static site in dist/site/")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--model-origin", action="append", default=[], metavar="ORIGIN",
                        help="another origin the page may download models from, e.g. https://huggingface.co "
                             "(repeat it for each, including the hosts its redirects lead to, e.g. https://*.hf.co)")
    args = parser.parse_args(argv)
    manifest = build_site(args.out, args.model, model_origins=args.model_origin)
    total = sum(entry["size"] for entry in manifest["files"].values())
    print("built %s: build %s, %d files, %.1f MB (model %s, %.1f MB)"
          % (args.out, manifest["build_id"], len(manifest["files"]), total / 1e6,
             manifest["model"]["name"], manifest["model"]["size"] / 1e6))


if __name__ == "__main__":
    main(sys.argv[1:])
