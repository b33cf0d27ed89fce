"""The built site (build/build_site.py) and its static server (build/serve.py), without a browser."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from e2e_helpers import REPO, SiteServer, copy_checkout, http_get, load_build_module

# What a classic worker fetches to boot Pyodide 0.27.7 and load numpy (pyodide.mjs, the .d.ts and .map files
# and console.html of the npm package are not needed), and the pure-Python wheels Jinja2 runs on.
NEEDED_PYODIDE_FILES = {
    "pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json",
    "numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl",
}
DEPENDENCY_WHEELS = ["wheels/markupsafe-3.0.3-py3-none-any.whl", "wheels/jinja2-3.1.6-py3-none-any.whl"]
PYODIDE_LOCK = REPO / "node_modules" / "pyodide" / "pyodide-lock.json"


def engine_wheel(manifest):
    """The engine's wheel: the workers install it last, after its dependencies."""
    return manifest["boot"]["wheelURLs"][-1]


@pytest.fixture(scope="module")
def site(tmp_path_factory, smollm2_path):
    out = tmp_path_factory.mktemp("site") / "site"
    manifest = load_build_module("build_site").build_site(out, smollm2_path)
    return out, manifest


@pytest.fixture(scope="module")
def server(site):
    server = SiteServer(site[0])
    yield server
    server.stop()


def test_only_the_pyodide_files_that_run_are_copied(site):
    out, manifest = site
    assert {p.name for p in (out / "pyodide").iterdir()} == NEEDED_PYODIDE_FILES
    assert sum(p.stat().st_size for p in (out / "pyodide").iterdir()) < 18e6
    for name in NEEDED_PYODIDE_FILES - {"numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"}:  # the npm files as they are
        assert (out / "pyodide" / name).read_bytes() == (PYODIDE_LOCK.parent / name).read_bytes(), name
    numpy = json.loads(PYODIDE_LOCK.read_text())["packages"]["numpy"]
    assert manifest["files"]["pyodide/" + numpy["file_name"]]["sha256"] == numpy["sha256"]  # Pyodide's own numpy
    assert manifest["pyodide"] == {"version": "0.27.7"}
    assert manifest["boot"] == {"indexURL": "pyodide/", "wheelURLs": DEPENDENCY_WHEELS + [engine_wheel(manifest)]}
    assert engine_wheel(manifest).startswith("wheels/pychat_wasm-") and engine_wheel(manifest).endswith(".whl")


def test_markupsafe_wheel_is_plain_python(site):
    """No compiled extension can load in wasm: the MarkupSafe wheel carries Python sources only."""
    out, _ = site
    wheel = zipfile.ZipFile(out / DEPENDENCY_WHEELS[0])
    assert {"markupsafe/__init__.py", "markupsafe/_native.py"} <= set(wheel.namelist())
    assert not [name for name in wheel.namelist() if name.endswith((".so", ".pyd"))]
    assert "Root-Is-Purelib: true" in wheel.read("markupsafe-3.0.3.dist-info/WHEEL").decode()


def test_a_numpy_wheel_that_is_not_pyodides_is_refused(tmp_path):
    """The build uses the numpy wheel only if its sha256 is the one in Pyodide 0.27.7's own lock file."""
    packages = load_build_module("browser_packages")
    numpy = json.loads(PYODIDE_LOCK.read_text())["packages"]["numpy"]
    good = (packages.CACHE / numpy["file_name"]).read_bytes()
    (tmp_path / numpy["file_name"]).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    for wheel in packages.python_wheels():
        (tmp_path / wheel[2].name).write_bytes(wheel[2].read_bytes())
    with pytest.raises(SystemExit, match="sha256 .* but Pyodide's pyodide-lock.json expects %s" % numpy["sha256"]):
        load_build_module("build_site").copy_pyodide(tmp_path / "out", packages_dir=tmp_path)
    (tmp_path / numpy["file_name"]).unlink()
    with pytest.raises(SystemExit, match="is missing: run scripts/setup.sh"):
        load_build_module("build_site").copy_pyodide(tmp_path / "out", packages_dir=tmp_path)


def test_manifest_lists_every_file_with_its_size_and_sha256(site, smollm2_path):
    out, manifest = site
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for path, entry in manifest["files"].items():
        data = (out / path).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, path
    # Only fields something reads (see build_site's docstring): the page, sw.js, the workers' boot, the tests
    assert set(manifest) == {"build_id", "pyodide", "boot", "precache", "files", "model", "model_origins",
                             "sampling_defaults", "settings_rules", "finetune_defaults"}
    model = manifest["model"]
    assert set(model) == {"name", "url", "size", "sha256", "info"}  # web/models.js defaultSpec
    assert model["sha256"] == hashlib.sha256(smollm2_path.read_bytes()).hexdigest()
    assert (model["size"], model["info"]["architecture"], model["url"]) == (
        98362432, "llama", "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model["info"]["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}


def test_service_worker_precaches_the_shell_python_and_wheel_but_not_the_model(site):
    out, manifest = site
    precache = manifest["precache"]
    assert {"./", "index.html", "app.js", "worker.js", "pyodide_runtime.js", "pyodide/pyodide.asm.wasm",
            "pyodide/python_stdlib.zip", *manifest["boot"]["wheelURLs"]} <= set(precache)
    assert not any(path.endswith(".gguf") for path in precache) and "sw.js" not in precache
    sw = (out / "sw.js").read_text()
    assert 'const BUILD_ID = "%s";' % manifest["build_id"] in sw and "__BUILD_ID__" not in sw


def test_wheel_carries_the_worker_api(site):
    out, manifest = site
    names = zipfile.ZipFile(out / engine_wheel(manifest)).namelist()
    assert {"pychat_wasm/browser/chat_worker.py", "pychat_wasm/chat/session.py", "pychat_wasm/model/forward.py"} <= set(names)


def site_files(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_building_twice_gives_byte_identical_sites(site, smollm2_path, tmp_path):
    """Reproducible builds: the same sources give the same bytes in every file, so the same build id and a
    returning user's offline cache survives a deploy that changed nothing."""
    out, manifest = site
    again = load_build_module("build_site").build_site(tmp_path / "site", smollm2_path)
    first, second = site_files(out), site_files(tmp_path / "site")
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert again["build_id"] == manifest["build_id"]
    wheel = zipfile.ZipFile(out / engine_wheel(manifest))
    names = wheel.namelist()
    assert names[-1].endswith(".dist-info/RECORD") and names == sorted(names, key=lambda n: (".dist-info/" in n,
                                                                                              n.endswith("RECORD"), n))
    assert {info.date_time for info in wheel.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr >> 16 for info in wheel.infolist()} == {0o100644}


def test_changing_one_source_byte_changes_the_wheel_and_the_build_id(site, smollm2_path, tmp_path):
    out, manifest = site
    sources = copy_checkout(tmp_path / "checkout")
    engine = sources / "pychat_wasm" / "chat" / "sampler.py"
    data = engine.read_bytes()
    engine.write_bytes(data + b"#")  # one byte more, in a comment
    changed = load_build_module("build_site").build_site(tmp_path / "site", smollm2_path, sources=sources)
    assert changed["build_id"] != manifest["build_id"]
    before = site_files(out)
    differing = {name for name, data in site_files(tmp_path / "site").items() if before[name] != data}
    assert differing == {engine_wheel(manifest), "sw.js", "manifest.json"}
    rebuilt = zipfile.ZipFile(tmp_path / "site" / engine_wheel(changed)).read("pychat_wasm/chat/sampler.py")
    assert rebuilt == data + b"#"


def get(server, path, headers=None, method="GET"):
    return http_get(server.port, path, headers, method)


@pytest.mark.parametrize("range_header, start, stop", [
    ("bytes=100-199", 100, 200),
    ("bytes=98362000-", 98362000, 98362432),
    ("bytes=-32", 98362400, 98362432),
])
def test_server_answers_range_requests(server, smollm2_path, range_header, start, stop):
    response, body = get(server, "/models/" + smollm2_path.name, {"Range": range_header})
    assert response.status == 206
    assert response.getheader("Content-Range") == "bytes %d-%d/98362432" % (start, stop - 1)
    with open(smollm2_path, "rb") as fh:
        fh.seek(start)
        assert body == fh.read(stop - start)


def test_server_refuses_a_range_past_the_end(server, smollm2_path):
    response, _ = get(server, "/models/" + smollm2_path.name, {"Range": "bytes=98362432-"})
    assert response.status == 416
    assert response.getheader("Content-Range") == "bytes */98362432"


@pytest.mark.parametrize("path, mime", [
    ("/pyodide/pyodide.asm.wasm", "application/wasm"),
    ("/app.js", "text/javascript; charset=utf-8"),
    ("/", "text/html; charset=utf-8"),
    ("/manifest.json", "application/json"),
    ("/manifest.webmanifest", "application/manifest+json"),
])
def test_server_sends_the_right_types(server, path, mime):
    response, _ = get(server, path, method="HEAD")
    assert response.status == 200
    assert response.getheader("Content-Type") == mime
    assert response.getheader("Accept-Ranges") == "bytes"


def test_server_answers_404_for_missing_files(server):
    assert get(server, "/nothing-here.js")[0].status == 404


def test_server_honours_if_range_only_while_the_file_is_unchanged(server, site):
    """RFC 9110 13.1.5: a Range request whose If-Range validator (ETag or Last-Modified) no longer matches
    gets the whole current file (200), so a resumed download cannot splice two versions."""
    out, _ = site
    changing = out / "changing.txt"
    changing.write_bytes(b"first version of the file")
    first, _ = get(server, "/changing.txt")
    etag, last_modified = first.getheader("ETag"), first.getheader("Last-Modified")
    assert etag.startswith('"') and last_modified.endswith(" GMT")
    for validator in (etag, last_modified):
        response, body = get(server, "/changing.txt", {"Range": "bytes=6-", "If-Range": validator})
        assert (response.status, body) == (206, b"version of the file")
    changing.write_bytes(b"second version, longer than the first")
    os.utime(changing, (1e9, 1e9))  # a different modification time too
    response, body = get(server, "/changing.txt", {"Range": "bytes=6-", "If-Range": etag})
    assert (response.status, body) == (200, b"second version, longer than the first")
    assert response.getheader("ETag") not in (None, etag)
    response, _ = get(server, "/changing.txt", {"Range": "bytes=6-", "If-Range": last_modified})
    assert response.status == 200


# ---- the scripts of the page and its workers: one namespace, self.Pychat ---------------------------------------

WEB = REPO / "web"
NAMESPACE_OPEN = '(function (Pychat) {\n  "use strict";\n'
NAMESPACE_CLOSE = "})(self.Pychat = self.Pychat || {});\n"
OWN_GLOBALS = {"Pychat", "pychat", "pychatTraining", "onmessage"}  # the self.X a script may set
ONE_EXPRESSION = r"""
const fs = require("fs"), vm = require("vm");
const out = {};
for (const path of JSON.parse(process.argv[1])) {
  const code = fs.readFileSync(path, "utf8").trimEnd().replace(/;$/, "");
  try { new vm.Script("(" + code + "\n)", {filename: path}); out[path] = null; } catch (e) { out[path] = String(e); }
}
process.stdout.write(JSON.stringify(out));
"""


ES_MODULES = {"pychat.js", "engine_http.js", "engine_errors.js"}  # the engine's library API: imports, not the namespace


def classic_scripts():
    """The page's scripts and the workers' (sw.js, the service worker, shares nothing with them; the ES modules
    of ES_MODULES neither: they import each other)."""
    return sorted(p for p in WEB.glob("*.js") if p.name != "sw.js" and p.name not in ES_MODULES)


def test_the_es_modules_are_the_ones_that_export():
    """A file with an export line is an ES module, listed in ES_MODULES; the classic scripts have none."""
    exporting = {p.name for p in WEB.glob("*.js") if re.search(r"^export ", p.read_text(), re.MULTILINE)}
    assert exporting == ES_MODULES


def exported_names(text):
    """The top-level keys of the `Object.assign(Pychat, {...})` of a script."""
    opening = "Object.assign(Pychat, {"
    if opening not in text:
        return []
    entries, depth, entry = [], 0, ""
    for char in text[text.index(opening) + len(opening):]:
        if char in "{[(":
            depth += 1
        elif char in ")]}" and depth:
            depth -= 1
        elif char in ",}" and not depth:
            entries.append(entry)
            entry = ""
            if char == "}":
                break
            continue
        entry += char
    return [entry.split(":")[0].strip() for entry in entries]


def destructured_names(text):
    """The names of `const {a, b} = Pychat;` (a, b) and `const {c} = Pychat.X;` (X) in a script."""
    names = set()
    for listed, member in re.findall(r"const \{([^}]*)\} = Pychat(?:\.(\w+))?;", text):
        names |= {member} if member else {name.strip() for name in listed.split(",")}
    return names


def used_names(text):
    """The names a script reads from the namespace: Pychat.X anywhere (header examples too), and destructured."""
    return set(re.findall(r"\bPychat\.(\w+)", text)) | destructured_names(text)


def test_every_script_is_one_iife_over_the_pychat_namespace():
    """Classic scripts share one global scope: a top-level const, function or class of one is a global that every
    later script sees (and collides with). So each file is one IIFE taking self.Pychat: the whole file, comments
    aside, parses as a single expression (V8 refuses any declaration or second statement beside it), and the
    only globals it sets are the namespace, the console's and tests' pychat / pychatTraining, and onmessage."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed: run scripts/setup.sh")
    scripts = classic_scripts()
    assert {"app.js", "worker.js", "train_worker.js", "pyodide_runtime.js"} <= {p.name for p in scripts}
    done = subprocess.run([node, "-e", ONE_EXPRESSION, json.dumps([str(p) for p in scripts])],
                          capture_output=True, text=True, check=True)
    errors = {Path(path).name: error for path, error in json.loads(done.stdout).items() if error}
    assert errors == {}
    for path in scripts:
        text = path.read_text()
        code = text[text.index("*/\n") + 3:] if text.startswith("/*") else text
        assert code.startswith(NAMESPACE_OPEN) and code.endswith(NAMESPACE_CLOSE), path.name
        assert set(re.findall(r"\b(?:self|window|globalThis)\.(\w+)\s*=(?!=)", text)) <= OWN_GLOBALS, path.name


def test_the_namespace_holds_what_the_scripts_use_in_load_order():
    """Each name of Pychat comes from one file and is used by another. A page script reads only names of the
    page's scripts, and destructures (at load) only those of scripts index.html loads before it; a worker reads
    only names of the scripts it imports, in importScripts order."""
    texts = {p.name: p.read_text() for p in classic_scripts()}
    exports = {}
    for name, text in texts.items():
        for export in exported_names(text):
            assert export not in exports, (export, name, exports.get(export))
            exports[export] = name
    entry_points = {"app.js", "worker.js", "train_worker.js", "snapshot_worker.js"}
    assert set(exports.values()) == set(texts) - entry_points
    for export, name in exports.items():
        assert any(export in used_names(text) for other, text in texts.items() if other != name), (export, name)

    page = [src for src in re.findall(r'<script src="([^"]+)"></script>', (WEB / "index.html").read_text())
            if not src.startswith("vendor/")]
    workers_only = {"pyodide_runtime.js", "worker_protocol.js", "python_snapshot.js"}
    assert set(page) | entry_points - {"app.js"} | workers_only == set(texts)
    loaded = set()
    for name in page:
        loaded |= set(exported_names(texts[name]))
        assert destructured_names(texts[name]) <= loaded, (name, destructured_names(texts[name]) - loaded)
    page_exports = {export for name in page for export in exported_names(texts[name])}
    for name in page:
        assert used_names(texts[name]) <= page_exports, (name, used_names(texts[name]) - page_exports)

    # pychat.js (createEngine) runs its own list of the page's scripts, in order
    (listed,) = re.findall(r"const ENGINE_SCRIPTS = \[([^\]]*)\]", (WEB / "pychat.js").read_text())
    available = set()
    for name in re.findall(r'"([^"]+)"', listed):
        available |= set(exported_names(texts[name]))
        assert destructured_names(texts[name]) <= available, ("pychat.js", name,
                                                              destructured_names(texts[name]) - available)

    for worker in ("worker.js", "train_worker.js", "snapshot_worker.js"):
        (imports,) = re.findall(r"importScripts\(([^)]*)\);", texts[worker])
        available = set()
        for name in re.findall(r'"([^"]+)"', imports) + [worker]:
            available |= set(exported_names(texts[name]))
            assert used_names(texts[name]) <= available, (worker, name, used_names(texts[name]) - available)


def test_the_error_types_the_page_branches_on_are_listed_once_and_exist():
    """The page tells a worker's errors apart by the Python exception's class name: every name it branches on
    (WorkerError.is(error, "X"), which also refuses an unlisted name when it runs) is in worker_error.js's
    ERROR_TYPES, each Python one is a class of pychat_wasm/errors.py (or Python's own), and the page's own are
    the ones it makes and no Python class, so renaming a class fails here instead of silently breaking a branch."""
    import builtins

    from pychat_wasm import errors

    text = (WEB / "worker_error.js").read_text()
    listed = {side: json.loads(re.search(side + r': (\[[^\]]*\])', text).group(1)) for side in ("python", "page")}
    for name in listed["python"]:
        cls = getattr(errors, name, None) or getattr(builtins, name, None)
        assert isinstance(cls, type) and issubclass(cls, BaseException), name
    for name in listed["page"]:
        assert not hasattr(errors, name) and not hasattr(builtins, name), name
    used, made = set(), set()
    for path in classic_scripts():
        used |= set(re.findall(r'WorkerError\.is\(\w+, "(\w+)"\)', path.read_text()))
        made |= set(re.findall(r'new WorkerError\(\{type: "(\w+)"', path.read_text()))
        assert not re.search(r'\b(?:error|e|cause)\.type [!=]== "', path.read_text()), path.name  # only through is()
    assert made == set(listed["page"])
    assert used | made == set(listed["python"]) | set(listed["page"])


def test_the_settings_form_is_the_engines_settings_with_their_bounds_from_the_manifest(site):
    """One input per SETTING_RULES entry, named as the engine names it; its bounds and default come from
    manifest.json (the HTML holds none that could drift from the rules)."""
    from pychat_wasm.chat.sampler import SETTING_RULES, SamplingSettings

    _, manifest = site
    html = (WEB / "index.html").read_text()
    form = html[html.index('<form id="settings">'):html.index("</form>", html.index('<form id="settings">'))]
    inputs = re.findall(r"<input [^>]*>", form)
    assert sorted(re.search(r'name="(\w+)"', i).group(1) for i in inputs) == sorted(SETTING_RULES)
    assert not any(re.search(r"\b(?:min|max|value)=", i) for i in inputs)
    assert manifest["sampling_defaults"] == dataclasses.asdict(SamplingSettings())
    for name, rule in SETTING_RULES.items():
        bounds = manifest["settings_rules"][name]
        assert (bounds["min"], bounds["max"], bounds["min_excluded"]) == (
            rule.low, None if rule.high == float("inf") else rule.high, rule.low_excluded)
    finetune = manifest["finetune_defaults"]
    assert finetune["epochs"] is None and finetune["replay"] is None  # the run's plan chooses from the data
    assert finetune["lr"] > 0 and "memory_limit" not in finetune
