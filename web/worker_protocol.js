/*
 * worker_protocol.js: the worker side of the request / reply protocol that worker_client.js speaks, shared by
 * both Python workers (worker.js for chat, train_worker.js for training). Classic script: importScripts it
 * after worker_error.js.
 *
 *     Pychat.serveRequests({boot, load, ..., stop}, {unqueued: ["stop"]});
 *
 * Each message from the page names a handler by its `type`; a message with a request id `rid` gets exactly one
 * {type: "reply", rid, ok, ...result | error}. A handler may put `transfer: [ArrayBuffer, ...]` in its result:
 * those buffers are moved to the page instead of copied. Handlers run one at a time, in order, except the
 * types listed in `unqueued`: those run as soon as they arrive, which for a long request (a chat answer, a
 * training run) is between two of its slices, since each slice ends with `await Pychat.nextTask()`.
 *
 * Python API functions answer JSON text ({"ok": true, ...} or {"ok": false, "error": {...}}): Pychat.checked()
 * turns it into an object or a WorkerError. An error that is neither a WorkerError nor raised by Python
 * code (a wasm trap, Pyodide's fatal error) means the interpreter can no longer be trusted: the page is told
 * with {type: "fatal", message} and restarts the worker.
 */
(function (Pychat) {
  "use strict";

  /* One turn of the worker's event loop: lets messages from the page (Stop, ...) in. */
  const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

  /* A Python API answer (JSON text) as an object; {ok: false} becomes a WorkerError (worker_error.js). */
  function checked(replyJSON) {
    const result = JSON.parse(replyJSON);
    if (!result.ok) throw new Pychat.WorkerError(result.error);
    return result;
  }

  /* An error the user can do something about (e.g. offline without cached files): no restart loop. */
  const userFacing = (error) => Object.assign(error, {userFacing: true});

  function isFatal(error) {
    return !(error instanceof Pychat.WorkerError) && !Pychat.isPythonError(error) && !(error && error.userFacing);
  }

  /* Any error a handler threw as the protocol's error shape {type, message, has_model}. */
  function asReply(error) {
    if (error instanceof Pychat.WorkerError) return error.toReply();
    const text = String(error && error.message || error);
    const lastLine = text.trim().split("\n").pop();  // a Python traceback ends with "Type: message"
    return {type: error && error.name || "Error", message: lastLine, has_model: false};
  }

  async function handleRequest(handlers, message) {
    const {rid, type} = message;
    try {
      if (!handlers[type]) throw userFacing(new Error(`unknown request ${type}`));
      const {transfer = [], ...result} = (await handlers[type](message)) || {};
      if (rid !== undefined) postMessage({type: "reply", rid, ok: true, ...result}, transfer);
    } catch (error) {
      if (rid !== undefined) postMessage({type: "reply", rid, ok: false, error: asReply(error)});
      if (isFatal(error)) postMessage({type: "fatal", message: asReply(error).message});
    }
  }

  function serveRequests(handlers, {unqueued = []} = {}) {
    let queue = Promise.resolve();
    self.onmessage = (e) => {
      const message = e.data;
      if (unqueued.includes(message.type)) {
        handleRequest(handlers, message);
      } else {
        queue = queue.then(() => handleRequest(handlers, message));  // one at a time, in order
      }
    };
  }

  Object.assign(Pychat, {nextTask, checked, userFacing, serveRequests});
})(self.Pychat = self.Pychat || {});
