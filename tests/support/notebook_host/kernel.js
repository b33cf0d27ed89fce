/* A notebook kernel (tests/browser/test_notebook.py): Pyodide as a notebook user has it, with none of the
 * product's code; messages {id, type: "start", indexURL, packageURLs} and {id, type: "cell", code} are
 * answered with {id, result} or {id, error}. A cell may use top-level await, as in JupyterLite. */
"use strict";
let pyodide = null;

async function start({indexURL, packageURLs}) {
  importScripts(indexURL + "pyodide.js");
  pyodide = await loadPyodide({indexURL});
  await pyodide.loadPackage(packageURLs);  // micropip: a notebook kernel has it loaded
  return pyodide.version;
}

async function cell({code}) {
  const result = await pyodide.runPythonAsync(code);
  return result === undefined ? null : String(result);
}

onmessage = async ({data}) => {
  try {
    const result = data.type === "start" ? await start(data) : await cell(data);
    postMessage({id: data.id, result});
  } catch (error) {
    postMessage({id: data.id, error: String((error && error.stack) || error)});
  }
};
