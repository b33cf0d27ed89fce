/*
 * python_snapshot.js: Python's memory right after Pyodide booted, kept in IndexedDB, so that the next start
 * restores it instead of starting the interpreter again (about 0.4 s in place of 3 s on a busy 2-core machine).
 * Classic script for workers: pyodide_runtime.js reads one (bootPython({snapshot: Pychat.PythonSnapshot})), and
 * snapshot_worker.js makes one, in a worker of its own that is thrown away afterwards: Pyodide 0.27.7's
 * `_makeSnapshot` mode wraps the JS globals in a recording proxy that breaks some of them (`js.location`
 * raises "Illegal invocation"), so no worker that serves requests ever boots in that mode.
 *
 *     const bytes = await Pychat.PythonSnapshot.read(indexURL);   // Uint8Array, or null (none, or damaged)
 *     await Pychat.PythonSnapshot.make(indexURL);                 // boot a fresh Pyodide here, save its memory
 *     await Pychat.PythonSnapshot.remove(indexURL);               // e.g. one that Pyodide refused
 *
 * What a snapshot holds: the wasm heap only, taken before any package is loaded (numpy's compiled side modules
 * live outside the heap, so the packages are loaded after a restore as after a boot). Pyodide checks its build
 * id on restore and refuses another version's snapshot; a truncated one would hang the restore instead, so
 * every snapshot is stored with its size and sha256 and used only when both match. Store "snapshots" of
 * database "pychat-python", keyed by the Pyodide folder's URL: {key, bytes, size, sha256, made}.
 */
(function (Pychat) {
  "use strict";

  const {idbResult, idbDone, sha256Hex} = Pychat;  // util.js
  const DB_NAME = "pychat-python";
  const STORE = "snapshots";

  function open() {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, {keyPath: "key"});
    return idbResult(request);
  }

  async function inStore(mode, action) {
    const db = await open();
    try {
      const tx = db.transaction(STORE, mode);
      const result = await idbResult(action(tx.objectStore(STORE)));
      if (mode === "readwrite") await idbDone(tx);
      return result;
    } finally {
      db.close();
    }
  }

  const folder = (indexURL) => new URL(indexURL.endsWith("/") ? indexURL : indexURL + "/", self.location.href).href;

  /* The saved snapshot of the Pyodide in `indexURL`, checked; null when there is none or it is damaged. */
  async function read(indexURL) {
    const record = await inStore("readonly", (store) => store.get(folder(indexURL)));
    if (!record || !(record.bytes instanceof Uint8Array)) return null;
    if (record.bytes.byteLength === record.size && await sha256Hex(record.bytes) === record.sha256) {
      return record.bytes;
    }
    await remove(indexURL);
    return null;
  }

  async function remove(indexURL) {
    await inStore("readwrite", (store) => store.delete(folder(indexURL)));
  }

  /* Boot Pyodide from `indexURL` in this (throw-away) worker and save its memory as the snapshot. */
  async function make(indexURL) {
    const base = folder(indexURL);
    if (typeof loadPyodide !== "function") importScripts(base + "pyodide.js");
    const pyodide = await loadPyodide({indexURL: base, _makeSnapshot: true});
    const bytes = pyodide.makeMemorySnapshot();
    const record = {key: base, bytes, size: bytes.byteLength, sha256: await sha256Hex(bytes), made: Date.now()};
    await inStore("readwrite", (store) => store.put(record));
    return record.size;
  }

  Object.assign(Pychat, {PythonSnapshot: {read, make, remove}});
})(self.Pychat = self.Pychat || {});
