/* The page of a notebook host (tests/browser/test_notebook.py): starts kernel.js, a worker running a bare Pyodide,
 * and exposes window.notebook for Playwright:
 *   notebook.start({indexURL, packageURLs}) -> Pyodide's version, once Pyodide and the packages are loaded
 *   notebook.cell(code)                     -> the cell's last expression (a cell makes it a JSON string) */
"use strict";
(function () {
  const kernel = new Worker("kernel.js");  // JupyterLite's Pyodide kernel runs in a worker too
  const pending = new Map();
  let nextId = 0;

  kernel.onmessage = ({data}) => {
    const {resolve, reject} = pending.get(data.id);
    pending.delete(data.id);
    data.error ? reject(new Error(data.error)) : resolve(data.result);
  };
  kernel.onerror = (event) => {
    for (const {reject} of pending.values()) reject(new Error("kernel failed: " + event.message));
    pending.clear();
  };

  function request(message) {
    const id = nextId++;
    kernel.postMessage({...message, id});
    return new Promise((resolve, reject) => pending.set(id, {resolve, reject}));
  }

  window.notebook = {
    start: (config) => request({type: "start", ...config}),
    cell: (code) => request({type: "cell", code}),
  };
})();
