/*
 * pyodide_runtime.js: the one place that knows Pyodide. Load it in a CLASSIC Web Worker:
 *
 *     importScripts("pyodide_runtime.js");
 *     const py = await Pychat.bootPython({
 *       indexURL: "pyodide/",                  // folder holding pyodide.js, pyodide.asm.*, python_stdlib.zip,
 *                                              // pyodide-lock.json and the numpy wheel
 *       packages: ["numpy"],                   // optional; packages of pyodide-lock.json found in indexURL
 *       wheelURLs: ["wheels/markupsafe-3.0.3-py3-none-any.whl", "wheels/jinja2-3.1.6-py3-none-any.whl",
 *                   "wheels/pychat_wasm-0.1.0-py3-none-any.whl"],  // pure-Python wheels, installed as they are
 *       onStatus: (text) => postMessage({status: text}), // optional progress messages
 *       snapshot: snapshots,                   // optional: where Python's memory saved after an earlier boot is
 *                                              // kept ({read, remove}: python_snapshot.js's), to restore it;
 *                                              // none saved, or refused: Pyodide boots as without it
 *       onPhase: (name) => ...,                // optional: a boot phase ended now ("snapshot read", then
 *                                              // "Pyodide from snapshot" or "Pyodide", then "numpy and wheels")
 *     });
 *
 * bootPython resolves to a small facade; nothing else in the product touches the Pyodide API. The app calls
 * named Python functions only (importFunctions, callWithBytes, callForBytes); running source text (runPython,
 * get, set) is for the test harness (tests/support/pyodide_harness) and the browser console:
 *
 *     py.runPython(code)               -> result of the last expression (JS value, or a PyProxy: call .destroy())
 *     py.runPythonAsync(code)          -> Promise of the same; top-level `await` allowed
 *     py.get(name)                     -> a Python global (functions come back callable from JS)
 *     py.importFunctions(module, names) -> {name: callable} for functions of a Python module, e.g.
 *                                         py.importFunctions("pychat_wasm.browser.chat_worker", ["load_model"]); they
 *                                         live as long as the worker (their proxies are never destroyed)
 *     py.set(name, value)              -> bind a Python global to a JS value (a JsProxy on the Python side)
 *     py.callWithBytes(fn, bytes, ...args)
 *                                      -> fn(numpy uint8 array copied from `bytes`, ...args): hands bytes to a
 *                                         Python function (from py.importFunctions); no global is left behind
 *     py.callForBytes(fn, ...args)     -> fn(...args) returns bytes / bytearray / a uint8 numpy array; this gives
 *                                         a JS-owned copy as a Uint8Array (no proxy outlives the call)
 *     py.toJs(value)                   -> a PyProxy converted to plain JS (lists, dicts, numbers, strings); other values unchanged
 *     py.heapF32()                     -> the wasm heap as a Float32Array (a numpy array's data starts at its
 *                                         address / 4); ask again after each call into Python, since a heap
 *                                         that grows gets a new view
 *     py.restored                      -> true when Python came from the snapshot
 *     py.versions                      -> {pyodide, python, numpy}, e.g. {pyodide: "0.27.7", python: "3.12.7",
 *                                         numpy: "2.0.2"}
 *     py.pyodide                       -> the raw Pyodide module, for the rare need not covered above
 *
 *     Pychat.isPythonError(error)      -> true for an exception raised by Python code (an ordinary failure),
 *                                         false for a wasm trap or Pyodide's own fatal error
 *
 * Pyodide 0.27.7 facts this relies on: a classic worker boots it with importScripts(indexURL + "pyodide.js");
 * loadPackage takes lock-file names (fetched from indexURL, sha256-checked against the lock file) and wheel
 * URLs alike, and installs wheels into site-packages without resolving their dependencies (so the list
 * names them all); an attribute fetched from a PyProxy is destroyed with it unless copied; loadPyodide
 * may be called once per worker; the wasm heap is 4 GiB (one array under 2 GiB) and never shrinks
 * (terminate the worker to reclaim it).
 */
(function (Pychat) {
  "use strict";

  const DEFAULT_PACKAGES = ["numpy"];
  const RESTORE_LIMIT_MS = 60000;  // a restore takes under a second (7 s at load 30 on 2 cores)

  /* Attributes of a PyProxy are borrowed (destroyed with it): each function gets a proxy of its own. */
  function importFunctions(pyodide, moduleName, names) {
    const module = pyodide.pyimport(moduleName);
    try {
      return Object.fromEntries(names.map((name) => [name, module[name].copy()]));
    } finally {
      module.destroy();
    }
  }

  /* fn(a numpy uint8 array holding a copy of `bytes`, ...args). The array's proxy is destroyed afterwards;
   * Python keeps the array alive for as long as fn keeps a reference to it. */
  function callWithBytes(pyodide, fn, bytes, ...args) {
    const view = ArrayBuffer.isView(bytes)
      ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      : new Uint8Array(bytes);
    pyodide.globals.set("_js_bytes", view);
    pyodide.runPython(
      "import numpy as _np\n" +
      "_call_with_bytes = _np.frombuffer(_js_bytes.to_py(), dtype=_np.uint8)\n" +
      "del _js_bytes, _np");
    const array = pyodide.globals.get("_call_with_bytes");
    pyodide.globals.delete("_call_with_bytes");
    try {
      return fn(array, ...args);
    } finally {
      array.destroy();
    }
  }

  /* A Uint8Array copy of what fn(...args) returns (any object with the buffer protocol, e.g. bytes). The
   * PyProxy of the result and the buffer view into the wasm heap are both released before returning: the
   * copy stays valid however the heap grows or the Python object goes away. */
  function callForBytes(fn, ...args) {
    const result = fn(...args);
    if (ArrayBuffer.isView(result)) return new Uint8Array(result);  // already converted: copy all the same
    try {
      const buffer = result.getBuffer("u8");
      try {
        return buffer.data.slice();
      } finally {
        buffer.release();
      }
    } finally {
      result.destroy();
    }
  }

  function toJs(value) {
    if (value && typeof value.toJs === "function") {
      const converted = value.toJs();
      value.destroy();
      return converted;
    }
    return value;
  }

  /* Pyodide hands an exception raised by Python code to JS as a PythonError. */
  const isPythonError = (error) => Boolean(error && error.constructor && error.constructor.name === "PythonError");

  /* Pyodide restored from the snapshot `snapshots` keeps (python_snapshot.js), or null when there is none or
   * Pyodide refuses it (another version's: it is deleted). */
  async function restoreSnapshot(snapshots, base, onPhase) {
    const saved = await snapshots.read(base).catch(() => null);
    if (!saved) return null;
    onPhase("snapshot read");
    let timer = null;
    try {  // a snapshot too small for Pyodide's memory hangs its instantiation instead of failing: give up then
      const gaveUp = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("the restore did not finish")), RESTORE_LIMIT_MS);
      });
      return await Promise.race([loadPyodide({indexURL: base, _loadSnapshot: saved}), gaveUp]);
    } catch (error) {
      await snapshots.remove(base).catch(() => {});
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  async function bootPython({indexURL, packages = DEFAULT_PACKAGES, wheelURLs = [], onStatus, snapshot = null,
                              onPhase = () => {}} = {}) {
    const status = onStatus || (() => {});
    const base = new URL(indexURL.endsWith("/") ? indexURL : indexURL + "/", self.location.href).href;
    status("loading Pyodide");
    importScripts(base + "pyodide.js");
    const restored = snapshot ? await restoreSnapshot(snapshot, base, onPhase) : null;
    const pyodide = restored || await loadPyodide({indexURL: base});
    onPhase(restored ? "Pyodide from snapshot" : "Pyodide");
    status("loading numpy and the engine");
    const failures = [];
    const wheels = wheelURLs.map((url) => new URL(url, self.location.href).href);  // loadPackage wants them whole
    await pyodide.loadPackage([...packages, ...wheels],
                              {messageCallback: () => {}, errorCallback: (message) => failures.push(message)});
    if (failures.length) {
      throw new Error("loading Python packages failed: " + failures.join("; "));
    }
    const versions = JSON.parse(pyodide.runPython(`
import json, sys, numpy
json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "numpy": numpy.__version__})
`));
    onPhase("numpy and wheels");
    status("Python ready");
    return {
      pyodide,
      restored: Boolean(restored),
      versions: {pyodide: pyodide.version, ...versions},
      runPython: (code) => pyodide.runPython(code),
      runPythonAsync: (code) => pyodide.runPythonAsync(code),
      get: (name) => pyodide.globals.get(name),
      importFunctions: (moduleName, names) => importFunctions(pyodide, moduleName, names),
      set: (name, value) => pyodide.globals.set(name, value),
      callWithBytes: (fn, bytes, ...args) => callWithBytes(pyodide, fn, bytes, ...args),
      callForBytes,
      toJs,
      heapF32: () => pyodide._module.HEAPF32,
    };
  }

  Object.assign(Pychat, {bootPython, isPythonError});
})(self.Pychat = self.Pychat || {});
