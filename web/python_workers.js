/*
 * python_workers.js: the Python that holds the chat model: a pool of chat workers (worker_pool.js) and its boot,
 * the start-up progress shown in the status line until a model is ready, the runtime badge, and the crash
 * policy (at most RESTARTS_PER_MINUTE automatic restarts, then a Restart button). What the workers hold, and
 * what a restart loads into them, is models.js's.
 *
 *     const workers = new Pychat.PythonWorkers({boot, setPhase, alertBox, onCrash: (reason) => ...});
 *     workers.start(size);     // a fresh pool of `size` ("auto" or a count; one without cross-origin isolation)
 *     await workers.booted;    // its boot reply (rejects when Python could not start; the page says so)
 *     workers.pool;            // the WorkerPool in use
 *     workers.status;          // start-up progress, "" once booted
 *     workers.crashed(reason, restart);  // from onCrash: calls restart() now, or offers it as a button
 */
(function (Pychat) {
  "use strict";

  const {WorkerError} = Pychat;  // worker_error.js
  const RESTARTS_PER_MINUTE = 2;

  class PythonWorkers {
    constructor({boot, setPhase, alertBox, onCrash}) {
      this.boot = boot;          // manifest.json's boot options
      this.setPhase = setPhase;
      this.alertBox = alertBox;
      this.onCrash = onCrash;    // (reason) => a worker died: models.js decides what to load again
      this.pool = null;
      this.booted = null;
      this.status = "";
      this.crashes = [];         // times of the recent crashes
    }

    /* A fresh pool (the old one, if any, terminated), booting. */
    start(size) {
      if (this.pool) this.pool.terminate();
      this.status = "starting";
      this.pool = new Pychat.WorkerPool({
        size: Pychat.WorkerPool.defaultSize(size),
        onStatus: (text) => { this.status = text; this.setPhase(); },
        onCrash: (reason) => this.onCrash(reason),
      });
      this.booted = this.pool.request("boot", this.boot)
        .then((reply) => {
          this.status = "";
          const {pyodide, python, numpy} = reply.versions;
          document.getElementById("runtime-badge").textContent = `Runtime: Pyodide ${pyodide} · Python ${python} · numpy ${numpy}`;
          return reply;
        });
      this.booted.catch((error) => {
        if (WorkerError.is(error, "WorkerCrashed")) return;
        this.setPhase("error", "Python could not start");
        this.alertBox("error", `Python could not start: ${error.message}`, {label: "Retry", run: () => location.reload()});
      });
    }

    /* A worker died: restart() at once, unless that happened too often in the last minute. */
    crashed(reason, restart) {
      const now = Date.now();
      this.crashes = this.crashes.filter((t) => now - t < 60000).concat(now);
      if (this.crashes.length <= RESTARTS_PER_MINUTE) {
        this.alertBox("error", `The Python worker crashed (${reason}). Restarting it; your conversation is kept.`);
        restart();
      } else {
        this.setPhase("error", "Python stopped");
        this.alertBox("error", `The Python worker crashed again (${reason}).`, {label: "Restart", run: restart});
      }
    }
  }

  Object.assign(Pychat, {PythonWorkers});
})(self.Pychat = self.Pychat || {});
