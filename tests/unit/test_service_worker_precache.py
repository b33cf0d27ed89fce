"""web/sw.js installs only a precache whose every file has the sha256 manifest.json lists for it.

The service worker runs in Node (tests/browser/test_e2e_update.py runs it in Chromium) with fetch serving
files from a dict and a stand-in CacheStorage; the expected digests come from Python's hashlib.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

SW = Path(__file__).resolve().parents[2] / "web" / "sw.js"
RUN_INSTALL = r"""
const fs = require("fs"), vm = require("vm");
const {files, served} = JSON.parse(fs.readFileSync(0, "utf8"));
const stored = {}, deleted = [];
const listeners = {};
const context = vm.createContext({
  self: {addEventListener: (type, fn) => { listeners[type] = fn; }},
  caches: {open: async (name) => ({put: async (path, response) => { stored[path] = await response.text(); }}),
           delete: async (name) => { deleted.push(name); return true; }, keys: async () => []},
  fetch: async (request) => {
    const path = new URL(request.url).pathname.slice(1) || "./";
    const body = path === "manifest.json" ? JSON.stringify({build_id: "b1", precache: Object.keys(served), files})
                                          : served[path] && Buffer.from(served[path], "base64");
    return new Response(body, {status: body === undefined ? 404 : 200});
  },
  Request: class extends Request { constructor(path, init) { super(new URL(path, "http://site/"), init); } },
  Response, Headers, URL, crypto, console,
});
context.importScripts = (...names) => names.forEach((name) =>  // the scripts beside sw.js, in its global scope
  vm.runInContext(fs.readFileSync(require("path").join(require("path").dirname(process.argv[1]), name), "utf8"), context));
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), context);
let installing;
listeners.install({waitUntil: (promise) => { installing = promise; }});
installing.then(() => console.log(JSON.stringify({installed: true, stored: Object.keys(stored).sort(), deleted})),
                (error) => console.log(JSON.stringify({installed: false, error: error.message, deleted})));
"""
FILES = {"./": b"<!doctype html>page", "app.js": b"console.log(1);", "pyodide/pyodide.asm.wasm": bytes(range(256))}


def install(served):
    listed = {("index.html" if path == "./" else path): {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
              for path, data in FILES.items()}
    payload = {"files": listed, "served": {path: base64.b64encode(data).decode() for path, data in served.items()}}
    out = subprocess.run(["node", "-e", RUN_INSTALL, str(SW)], input=json.dumps(payload), capture_output=True,
                         text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_a_precache_whose_files_match_the_manifest_installs():
    result = install(FILES)
    assert result["installed"], result
    assert result["stored"] == sorted(list(FILES) + ["manifest.json"]) and result["deleted"] == []


def test_one_file_of_another_build_fails_the_install_and_leaves_no_cache():
    """A changed byte (a stale or damaged copy): the install fails, so the old worker and its cache stay."""
    stale = dict(FILES, **{"app.js": b"console.log(2);"})
    result = install(stale)
    assert not result["installed"]
    assert "app.js" in result["error"] and "sha256" in result["error"]
    assert result["deleted"] == ["pychat-shell-__BUILD_ID__"]
