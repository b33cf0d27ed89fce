/*
 * worker_client.js: the page's handle on a Python worker: worker.js (chat, the default) or train_worker.js
 * (training). Requests return promises; events (a request's chunks, training progress) go to the callback given
 * with the request; a failed request rejects with a WorkerError (worker_error.js); a crash (an uncaught error
 * in the worker, or Python reporting itself broken) rejects whatever is pending with WorkerCrashed and calls
 * onCrash, and the caller decides whether to restart.
 *
 *     const python = new Pychat.PythonWorker({onStatus, onCrash});      // {script: "train_worker.js", ...}
 *     await python.request("boot", {indexURL, wheelURLs});
 *     await python.request("request", {kind, body}, {onEvent: (chunk) => ...});
 *     python.stop();           // the running request (or training) ends after the current token (or slice)
 */
(function (Pychat) {
  "use strict";

  const {workerStopped} = Pychat;  // worker_error.js

  class PythonWorker {
    constructor({script = "worker.js", onStatus = () => {}, onCrash = () => {}} = {}) {
      this.onStatus = onStatus;
      this.onCrash = onCrash;
      this.pending = new Map();  // rid -> {resolve, reject, onEvent}
      this.nextRid = 1;
      this.crashed = false;
      this.worker = new Worker(script);
      this.worker.onmessage = (e) => this.receive(e.data);
      this.worker.onerror = (e) => {
        e.preventDefault();
        this.crash(e.message || "the worker stopped with an error");
      };
      this.worker.onmessageerror = () => this.crash("a message from the worker could not be read");
    }

    request(type, payload = {}, {onEvent = null, transfer = []} = {}) {
      if (this.crashed) return Promise.reject(workerStopped());
      const rid = this.nextRid++;
      return new Promise((resolve, reject) => {
        this.pending.set(rid, {resolve, reject, onEvent});
        this.worker.postMessage({...payload, type, rid}, transfer);
      });
    }

    stop() {
      if (!this.crashed) this.worker.postMessage({type: "stop"});
    }

    receive(message) {
      if (message.type === "status") {
        this.onStatus(message.text);
      } else if (message.type === "event") {
        const entry = this.pending.get(message.rid);
        if (entry && entry.onEvent) entry.onEvent(message.event);
      } else if (message.type === "reply") {
        const entry = this.pending.get(message.rid);
        this.pending.delete(message.rid);
        if (!entry) return;
        if (message.ok) entry.resolve(message);
        else entry.reject(new Pychat.WorkerError(message.error));
      } else if (message.type === "fatal") {
        this.crash(message.message);
      }
    }

    crash(reason) {
      if (this.crashed) return;
      this.terminate();
      this.onCrash(reason);
    }

    /* End the worker (its wasm heap goes with it) and fail every pending request. */
    terminate() {
      this.crashed = true;
      this.worker.terminate();
      for (const {reject} of this.pending.values()) reject(workerStopped());
      this.pending.clear();
    }
  }

  Object.assign(Pychat, {PythonWorker});
})(self.Pychat = self.Pychat || {});
