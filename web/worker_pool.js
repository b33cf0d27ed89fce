/*
 * worker_pool.js: the page's chat Python: one worker, or several that split every token between them
 * (tensor parallel: each holds a shard of the model and they add up their partial products through a
 * SharedArrayBuffer, see tensor_parallel.js). It answers the same requests as one PythonWorker:
 *
 *     const python = new Pychat.WorkerPool({size: Pychat.WorkerPool.defaultSize(), onStatus, onCrash});
 *     await python.request("boot", {indexURL, wheelURLs});       // every worker boots its own Pyodide
 *     await python.request("checkFit", {header, fileSize, options});  // worker 0 only (fit_check.js)
 *     await python.request("load", {name, bytes, options}, {transfer: [bytes]});   // each keeps its shard
 *     await python.request("countTokens", {text});     // worker 0 only: {tokens}
 *     await python.request("applyLora", {name, bytes, scale}, {transfer: [bytes]});  // each applies its shard
 *     await python.request("removeLora", {name});
 *     await python.request("request", {kind, body}, {onEvent});   // one of OpenAI's (api_requests.js): its
                                                                 // chunks come from worker 0
 *     python.stop(); python.workers;                              // workers holding the model, e.g. 2
 *
 * Every worker gets every request and runs the same session on the same numbers, so all of them pick the
 * same tokens (a missing seed is chosen here, once for all). When they disagree (one failed, or one died)
 * the pool is broken: it stops every worker and reports a crash, and the page starts a fresh pool.
 */
(function (Pychat) {
  "use strict";

  const {WorkerError} = Pychat;  // worker_error.js
  const SAMPLED = ["chat.completions", "completions"];  // the requests that sample tokens (take a seed)

  class WorkerPool {
    /* Several workers need cross-origin isolation (SharedArrayBuffer, Atomics.wait in workers); `wanted`
     * is a number or "auto" (the cores the browser reports). More workers than cores only slows a token. */
    static canShare() {
      return Boolean(self.crossOriginIsolated) && typeof SharedArrayBuffer !== "undefined";
    }

    static defaultSize(wanted = "auto") {
      if (!WorkerPool.canShare()) return 1;
      const cores = Math.max(1, navigator.hardwareConcurrency || 1);
      return wanted === "auto" ? cores : Math.max(1, Math.min(cores, Number(wanted) || 1));
    }

    /* script: worker.js's URL (web/pychat.js's engine passes it absolute, beside itself). */
    constructor({size = 1, script = "worker.js", onStatus = () => {}, onCrash = () => {}} = {}) {
      this.onCrash = onCrash;
      this.crashed = false;
      this.shared = size > 1 ? new SharedArrayBuffer(Pychat.TensorParallel.sharedBytes(size)) : null;
      this.members = Array.from({length: size}, (_, rank) => new Pychat.PythonWorker({
        script,
        onStatus: rank === 0 ? onStatus : () => {},
        onCrash: (reason) => this.crash(size > 1 ? `worker ${rank + 1} of ${size}: ${reason}` : reason),
      }));
      this.active = this.members;  // the workers holding a shard of the loaded model
    }

    get workers() {
      return this.active.length;
    }

    async request(type, payload = {}, {onEvent = null, transfer = []} = {}) {
      if (this.crashed) throw Pychat.workerStopped();
      if (type === "boot") {
        const shared = this.shared, workers = this.members.length;
        return this.all(this.members, (m, rank) => m.request("boot", {...payload, rank, workers, shared}));
      }
      if (type === "load") return this.load(payload, transfer);
      if (type === "applyLora") return this.applyLora(payload);
      if (type === "checkFit") return this.members[0].request(type, payload, {transfer});  // needs one Python
      if (type === "countTokens") return this.active[0].request(type, payload);  // the same in every worker
      if (type === "request" && payload.body.seed == null && SAMPLED.includes(payload.kind)) {
        payload = {...payload, body: {...payload.body, seed: randomSeed()}};
      }
      return this.all(this.active, (m, rank) => m.request(type, payload, {onEvent: rank === 0 ? onEvent : null}));
    }

    /* Every worker gets its own copy of the model's bytes (the original goes to worker 0). */
    async load({name, bytes, options = {}}) {
      const copies = this.members.map((_, rank) => (rank === 0 ? bytes : bytes.slice(0)));
      const workers = this.members.length;
      const replies = await this.all(this.members, (m, rank) => m.request(
        "load", {name, bytes: copies[rank], options: {...options, rank, workers}}, {transfer: [copies[rank]]}),
      {all: true});
      this.active = this.members.filter((_, rank) => !replies[rank].idle);
      return replies[0];
    }

    /* Every worker holding a shard of the model gets its own copy of the adapter's bytes. */
    async applyLora({bytes, ...rest}) {
      const copies = this.active.map((_, rank) => (rank === 0 ? bytes : bytes.slice(0)));
      return this.all(this.active, (m, rank) => m.request("applyLora", {...rest, bytes: copies[rank]},
                                                          {transfer: [copies[rank]]}));
    }

    /* Run one request on each of `members`; resolves to worker 0's reply (or to all of them). When the
     * workers fail alike (a context too long for this model) that failure is the answer; when they disagree
     * the pool is broken. A MemoryError is reported as such: the page restarts Python for fresh memory. */
    async all(members, send, {all = false} = {}) {
      const results = await Promise.allSettled(members.map(send));
      const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason);
      if (!failures.length) return all ? results.map((r) => r.value) : results[0].value;
      if (this.crashed || failures.some((e) => WorkerError.is(e, "WorkerCrashed"))) throw Pychat.workerStopped();
      const same = failures.length === members.length && failures.every((e) => e.type === failures[0].type &&
                                                                              e.message === failures[0].message);
      if (same) {
        if (this.shared) Pychat.TensorParallel.reset(this.shared);  // each freed the others: nobody waits any more
        throw failures[0];
      }
      const cause = failures.find((e) => !String(e.message).includes(Pychat.TensorParallel.ABORT_MESSAGE)) || failures[0];
      if (WorkerError.is(cause, "MemoryError")) throw cause;
      this.crash(cause.message);
      throw Pychat.workerStopped();
    }

    stop() {
      for (const member of this.members) member.stop();
    }

    crash(reason) {
      if (this.crashed) return;
      this.terminate();
      this.onCrash(reason);
    }

    /* End every worker (their wasm heaps go with them); one stuck waiting for another is woken first. */
    terminate() {
      this.crashed = true;
      if (this.shared) Pychat.TensorParallel.abort(this.shared);
      for (const member of this.members) member.terminate();
    }
  }

  /* A seed for a request without one: the same for every worker, so they sample the same tokens. */
  function randomSeed() {
    const [high, low] = crypto.getRandomValues(new Uint32Array(2));
    return (high >>> 11) * 2 ** 32 + low;  // 53 bits: exact as a JS number
  }

  Object.assign(Pychat, {WorkerPool});
})(self.Pychat = self.Pychat || {});
