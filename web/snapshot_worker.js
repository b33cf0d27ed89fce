/*
 * snapshot_worker.js: a throw-away worker that boots Pyodide once to save its memory for the next starts
 * (python_snapshot.js says why this is a worker of its own). worker.js starts it after a start that found no
 * snapshot to restore, once the model is loaded.
 *
 *     {indexURL} in  ->  {ok: true, bytes} | {ok: false, message} out, then the worker closes itself
 */
(function (Pychat) {
  "use strict";

  importScripts("util.js", "python_snapshot.js");

  self.onmessage = async ({data}) => {
    try {
      postMessage({ok: true, bytes: await Pychat.PythonSnapshot.make(data.indexURL)});
    } catch (error) {
      postMessage({ok: false, message: String(error && error.message || error)});
    } finally {
      self.close();
    }
  };
})(self.Pychat = self.Pychat || {});
