/*
 * worker.js: the classic Web Worker that runs Python. It boots Pyodide (through pyodide_runtime.js, the one
 * place that knows Pyodide), loads model bytes handed over by the page, and runs the token loop: one
 * Python step per call to worker_api.next_event(), then a turn of the event loop so that a Stop message
 * from the page gets in between two tokens.
 *
 * Messages in (from worker_client.js), each with a request id `rid`:
 *   {type: "boot", indexURL, wheelURL}
 *   {type: "load", name, bytes: ArrayBuffer (transferred), options}
 *   {type: "conversation", conversation: {system_prompt, messages}}
 *   {type: "chat", text, settings}
 *   {type: "stop"}                                   (no rid: acts on the running chat at once)
 * Messages out:
 *   {type: "status", text}                           start-up progress
 *   {type: "reply", rid, ok, ...result | error}      one per request
 *   {type: "event", rid, event}                      chat stream: progress / piece / notice / done
 *   {type: "fatal", message}                         Python itself is broken: the page restarts the worker
 */
"use strict";

importScripts("pyodide_runtime.js");

const API_FUNCTIONS = ["set_conversation", "begin_turn", "next_event", "cancel"];
let py = null;          // the facade from bootPython
let api = null;         // {name: callable} for the pychat_wasm.worker_api functions, fetched once
let stopRequested = false;
let queue = Promise.resolve();

const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

class PythonFailure extends Error {
  constructor(error) {
    super(error.message);
    this.type = error.type;
    this.hasModel = error.has_model;
  }
}

/* A worker_api answer (JSON text) as an object; {ok: false} becomes a PythonFailure. */
function checked(replyJSON) {
  const result = JSON.parse(replyJSON);
  if (!result.ok) throw new PythonFailure(result.error);
  return result;
}

const callApi = (name, ...args) => checked(api[name](...args));

/* An error thrown by Python code is an ordinary failure of that request; anything else (a wasm trap,
 * Pyodide's fatal error) means the interpreter can no longer be trusted. */
function isFatal(error) {
  return !(error instanceof PythonFailure) && !self.isPythonError(error) && !(error && error.userFacing);
}

function describe(error) {
  if (error instanceof PythonFailure) return {type: error.type, message: error.message, hasModel: error.hasModel};
  const text = String(error && error.message || error);
  const lastLine = text.trim().split("\n").pop();  // a Python traceback ends with "Type: message"
  return {type: error && error.name || "Error", message: lastLine};
}

const handlers = {
  async boot({indexURL, wheelURL}) {
    const started = performance.now();
    try {
      py = await self.bootPython({indexURL, wheelURL, onStatus: (text) => postMessage({type: "status", text})});
    } catch (error) {
      throw Object.assign(error, {userFacing: true});  // e.g. offline without cached files: no restart loop
    }
    py.runPython("from pychat_wasm import worker_api as _worker_api\n" +
                 `from pychat_wasm.worker_api import ${API_FUNCTIONS.join(", ")}`);
    api = Object.fromEntries(API_FUNCTIONS.map((name) => [name, py.get(name)]));
    return {versions: py.versions, seconds: (performance.now() - started) / 1000};
  },

  async load({name, bytes, options}) {
    if (!api) throw Object.assign(new Error("Python is not running"), {userFacing: true});
    const started = performance.now();
    py.setBytes("_model_bytes", new Uint8Array(bytes));
    bytes = null;  // the copy lives in the wasm heap now
    // JSON string literals are valid Python string literals.
    const call = `_worker_api.load_model(_model_bytes, ${JSON.stringify(name)}, ` +
                 `${JSON.stringify(JSON.stringify(options || {}))})`;
    const result = checked(py.runPython(`try:\n    _reply = ${call}\nfinally:\n    del _model_bytes\n_reply`));
    return {info: result.info, seconds: (performance.now() - started) / 1000};
  },

  async conversation({conversation}) {
    return callApi("set_conversation", JSON.stringify(conversation));
  },

  async chat({rid, text, settings}) {
    callApi("begin_turn", text, JSON.stringify(settings || {}));
    stopRequested = false;
    for (;;) {
      if (stopRequested) {
        api.cancel();
        stopRequested = false;
      }
      const {event} = callApi("next_event");
      if (!event) return {};
      postMessage({type: "event", rid, event});
      if (event.kind === "done") return {stats: event.stats};
      await nextTask();
    }
  },
};

async function handle(message) {
  const {rid, type} = message;
  try {
    const result = await handlers[type](message);
    postMessage({type: "reply", rid, ok: true, ...result});
  } catch (error) {
    postMessage({type: "reply", rid, ok: false, error: describe(error)});
    if (isFatal(error)) postMessage({type: "fatal", message: describe(error).message});
  }
}

self.onmessage = (e) => {
  const message = e.data;
  if (message.type === "stop") {
    stopRequested = true;
    return;
  }
  queue = queue.then(() => handle(message));  // one Python call at a time, in order
};
