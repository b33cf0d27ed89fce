/*
 * pyodide_runtime.js: the one place that knows Pyodide. Load it in a CLASSIC Web Worker:
 *
 *     importScripts("pyodide_runtime.js");
 *     const py = await self.bootPython({
 *       indexURL: "pyodide/",                        // folder holding pyodide.js, pyodide.asm.*, packages.json, numpy.*, ...
 *       packages: ["numpy", "Jinja2", "regex"],      // optional; this is the default (names as in packages.json)
 *       wheelURL: "pychat_wasm-0.1.0-py3-none-any.whl", // optional; our engine, installed into site-packages
 *       onStatus: (text) => postMessage({status: text}), // optional progress messages
 *     });
 *
 * bootPython resolves to a small facade; nothing else in the product touches the Pyodide API:
 *
 *     py.runPython(code)               -> result of the last expression (JS value, or a PyProxy: call .destroy())
 *     py.runPythonAsync(code)          -> Promise of the same; top-level `await` allowed
 *     py.get(name)                     -> a Python global (functions come back callable from JS)
 *     py.importFunctions(module, names) -> {name: callable} for functions of a Python module, e.g.
 *                                         py.importFunctions("pychat_wasm.worker_api", ["load_model"]); they
 *                                         live as long as the worker (their proxies are never destroyed)
 *     py.set(name, value)              -> bind a Python global to a JS value (a JsProxy on the Python side)
 *     py.setBytes(name, bytes)         -> bind a Python global to a numpy uint8 array copied from an
 *                                         ArrayBuffer / typed array (one copy into the wasm heap)
 *     py.callWithBytes(fn, bytes, ...args)
 *                                      -> fn(numpy uint8 array copied from `bytes`, ...args): hands bytes to a
 *                                         Python function (from py.importFunctions); no global is left behind
 *     py.callForBytes(fn, ...args)     -> fn(...args) returns bytes / bytearray / a uint8 numpy array; this gives
 *                                         a JS-owned copy as a Uint8Array (no proxy outlives the call)
 *     py.toJs(value)                   -> a PyProxy converted to plain JS (lists, dicts, numbers, strings); other values unchanged
 *     py.versions                      -> {pyodide, python, numpy}
 *     py.pyodide                       -> the raw Pyodide module, for the rare need not covered above
 *
 *     self.isPythonError(error)        -> true for an exception raised by Python code (an ordinary failure),
 *                                         false for a wasm trap or Pyodide's own fatal error
 *
 * Pyodide 0.17.1 facts this relies on (measured here): only a classic worker works (importScripts),
 * loadPyodide may be called once per worker, the wasm heap never shrinks (terminate the worker to reclaim it),
 * and a wheel whose dependencies all ship with the distribution can simply be unzipped into site-packages.
 */
"use strict";

const DEFAULT_PACKAGES = ["numpy", "Jinja2", "regex"];

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`fetching ${url} failed: HTTP ${response.status}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}

/* Copy bytes into the wasm heap as a numpy uint8 array bound to the Python global `name`. */
function setBytes(pyodide, name, bytes) {
  const view = ArrayBuffer.isView(bytes)
    ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    : new Uint8Array(bytes);
  pyodide.globals.set("_js_bytes", view);
  pyodide.runPython(
    `import numpy as _np\n` +
    `globals()[${JSON.stringify(name)}] = _np.frombuffer(_js_bytes.to_py(), dtype=_np.uint8)\n` +
    `del _js_bytes, _np`);
}

function importFunctions(pyodide, moduleName, names) {
  const importlib = pyodide.runPython("import importlib\nimportlib");
  const module = importlib.import_module(moduleName);
  try {
    return Object.fromEntries(names.map((name) => [name, module[name]]));
  } finally {
    module.destroy();
    importlib.destroy();
  }
}

/* fn(a numpy uint8 array holding a copy of `bytes`, ...args). The array's proxy is destroyed afterwards;
 * Python keeps the array alive for as long as fn keeps a reference to it. */
function callWithBytes(pyodide, fn, bytes, ...args) {
  const name = "_call_with_bytes";
  setBytes(pyodide, name, bytes);
  const array = pyodide.globals.get(name);
  pyodide.globals.delete(name);
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

/* Unzip our wheel into site-packages: pure Python, its dependencies are already loaded. */
function installWheel(pyodide, wheelBytes) {
  setBytes(pyodide, "_wheel_bytes", wheelBytes);
  pyodide.runPython(`
import importlib, io, site, zipfile
zipfile.ZipFile(io.BytesIO(_wheel_bytes.tobytes())).extractall(site.getsitepackages()[0])
importlib.invalidate_caches()
del _wheel_bytes
`);
}

function toJs(value) {
  if (value && typeof value.toJs === "function") {
    const converted = value.toJs();
    value.destroy();
    return converted;
  }
  return value;
}

/* Pyodide 0.17.1 hands an exception raised by Python code to JS as an Error named "PythonError". */
self.isPythonError = (error) => Boolean(error && error.name === "PythonError");

self.bootPython = async function bootPython({indexURL, packages = DEFAULT_PACKAGES, wheelURL, onStatus} = {}) {
  const status = onStatus || (() => {});
  const base = indexURL.endsWith("/") ? indexURL : indexURL + "/";
  status("loading Pyodide");
  importScripts(base + "pyodide.js");
  const pyodide = await loadPyodide({indexURL: base});
  status(`loading ${packages.join(", ")}`);
  const failures = [];
  await pyodide.loadPackage(packages, () => {}, (message) => failures.push(message));
  if (failures.length) {
    throw new Error("loading Python packages failed: " + failures.join("; "));
  }
  if (wheelURL) {
    status("installing the engine");
    installWheel(pyodide, await fetchBytes(wheelURL));
  }
  const versions = toJs(pyodide.runPython(`
import sys, numpy
{"python": "%d.%d.%d" % sys.version_info[:3], "numpy": numpy.__version__}
`));
  status("Python ready");
  return {
    pyodide,
    versions: {pyodide: pyodide.version, python: versions.get("python"), numpy: versions.get("numpy")},
    runPython: (code) => pyodide.runPython(code),
    runPythonAsync: (code) => pyodide.runPythonAsync(code),
    get: (name) => pyodide.globals.get(name),
    importFunctions: (moduleName, names) => importFunctions(pyodide, moduleName, names),
    set: (name, value) => pyodide.globals.set(name, value),
    setBytes: (name, bytes) => setBytes(pyodide, name, bytes),
    callWithBytes: (fn, bytes, ...args) => callWithBytes(pyodide, fn, bytes, ...args),
    callForBytes,
    toJs,
  };
};
