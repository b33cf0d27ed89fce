"""The built site (build/build_site.py) and its static server (build/serve.py), without a browser."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import zipfile

import pytest

from e2e_helpers import SiteServer, load_build_module

NEEDED_PYODIDE_FILES = {
    "pyodide.js", "pyodide.asm.js", "pyodide.asm.data", "pyodide.asm.wasm", "packages.json",
    "numpy.js", "numpy.data", "Jinja2.js", "Jinja2.data", "MarkupSafe.js", "MarkupSafe.data",
    "regex.js", "regex.data",
}


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
    assert sum(p.stat().st_size for p in (out / "pyodide").iterdir()) < 32e6
    assert manifest["pyodide"]["version"] == "0.17.1"
    assert manifest["pyodide"]["packages"] == {"numpy": "1.17.5", "Jinja2": "2.11.3", "MarkupSafe": "1.1.1",
                                               "regex": "2021.4.4"}


def test_manifest_lists_every_file_with_its_size_and_sha256(site, smollm2_path):
    out, manifest = site
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for path, entry in manifest["files"].items():
        data = (out / path).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, path
    model = manifest["model"]
    assert model["sha256"] == hashlib.sha256(smollm2_path.read_bytes()).hexdigest()
    assert (model["size"], model["architecture"], model["url"]) == (
        98362432, "llama", "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model["quant_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}


def test_service_worker_precaches_the_shell_python_and_wheel_but_not_the_model(site):
    out, manifest = site
    precache = manifest["precache"]
    assert {"./", "index.html", "app.js", "worker.js", "pyodide_runtime.js", "pyodide/pyodide.asm.wasm",
            manifest["wheel"]} <= set(precache)
    assert not any(path.endswith(".gguf") for path in precache) and "sw.js" not in precache
    sw = (out / "sw.js").read_text()
    assert 'const BUILD_ID = "%s";' % manifest["build_id"] in sw and "__BUILD_ID__" not in sw


def test_wheel_carries_the_worker_api(site):
    out, manifest = site
    names = zipfile.ZipFile(out / manifest["wheel"]).namelist()
    assert {"pychat_wasm/worker_api.py", "pychat_wasm/session.py", "pychat_wasm/model.py"} <= set(names)


def get(server, path, headers=None, method="GET"):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


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
