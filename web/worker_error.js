/*
 * worker_error.js: the one error type of the worker protocol, on both sides of it. A Python API function
 * that fails answers {"ok": false, "error": {type, message, has_model, needed_bytes, status, openai}}
 * (pychat_wasm/browser/protocol.py, ErrorReply); the worker throws it as a WorkerError (worker_protocol.js), posts the same shape in its reply,
 * and the page's request rejects with a WorkerError made from it (worker_client.js). The page makes a few of
 * its own: WorkerCrashed (the worker is gone), DoesNotFit (the fit check said no).
 *
 *     if (Pychat.WorkerError.is(error, "MemoryError")) ...   // throws for a type not in ERROR_TYPES
 *
 * The page branches on the error's type, which is a Python class name: the names it branches on are listed
 * here, once, and tests/browser/test_site.py checks that each exists in pychat_wasm/errors.py (or is
 * Python's own, or made by the page), so that renaming a class cannot silently break a branch.
 */
(function (Pychat) {
  "use strict";

  const ERROR_TYPES = {
    python: ["MemoryError", "HeaderTruncatedError", "TrainingDataError", "AdapterError",
             "AdapterMismatchError"],  // pychat_wasm/errors.py, builtins
    page: ["WorkerCrashed", "DoesNotFit"],  // made in JS
  };
  const KNOWN = new Set([...ERROR_TYPES.python, ...ERROR_TYPES.page]);

  class WorkerError extends Error {
    /* error: the protocol's shape, {type, message, has_model, ...}. */
    constructor({type, message, has_model = false, needed_bytes = 0, status = 500, openai = null}) {
      super(message);
      this.name = "WorkerError";
      this.type = type;                  // the Python exception's class name, or one of ERROR_TYPES.page
      this.hasModel = Boolean(has_model);  // the worker still holds the model it had before
      this.neededBytes = needed_bytes;   // HeaderTruncatedError: how many first bytes the header needs
      this.status = status;              // as an HTTP answer (web/engine_errors.js): 400 for a refused request
      this.openai = openai;              // OpenAI's error object {message, type, param, code}, or null
    }

    /* Whether `error` is a WorkerError of `type`, which must be one of ERROR_TYPES. */
    static is(error, type) {
      if (!KNOWN.has(type)) throw new Error(`${type} is not in worker_error.js's ERROR_TYPES`);
      return error instanceof WorkerError && error.type === type;
    }

    /* The protocol's shape, to post in a reply. */
    toReply() {
      return {type: this.type, message: this.message, has_model: this.hasModel, needed_bytes: this.neededBytes,
              status: this.status, openai: this.openai};
    }
  }

  /* What every request to a stopped worker fails with. */
  const workerStopped = () => new WorkerError({type: "WorkerCrashed", message: "the Python worker stopped"});

  Object.assign(Pychat, {WorkerError, workerStopped});
})(self.Pychat = self.Pychat || {});
