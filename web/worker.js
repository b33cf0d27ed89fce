/*
 * worker.js: the classic Web Worker that runs Python. It boots Pyodide (through pyodide_runtime.js, the one
 * place that knows Pyodide), loads model bytes handed over by the page, and runs the token loop: one
 * Python step per call to next_chunk(), then a turn of the event loop so that a Stop message from the page
 * gets in between two tokens.
 *
 * One of several workers sharing a model (worker_pool.js) also gets its rank, the number of workers and
 * the SharedArrayBuffer through which the shards add up their products (tensor_parallel.js); the workers
 * then agree on Stop through it, so that all of them end the answer at the same token.
 *
 * This is the protocol, written down once; each request calls the named pychat_wasm.browser.chat_worker function.
 * Chat turns are OpenAI's requests (api_requests.js sends them, for the page's chat and for web/pychat.js): the
 * page owns the conversation and sends it whole with every turn; Python keeps only its KV cache.
 * Messages in (from worker_client.js), each with a request id `rid`:
 *   {type: "boot", indexURL, wheelURLs, rank, workers, shared}   Python from its snapshot when one is saved
 *                                       (python_snapshot.js); else worker 0 saves one after its first load
 *   {type: "checkFit", header: ArrayBuffer, fileSize, options}            check_fit
 *   {type: "load", name, bytes: ArrayBuffer (transferred), options}      load_model
 *   {type: "request", kind, body}       begin_request, then next_chunk(stop): one of OpenAI's requests;
 *                                       kind "chat.completions", "completions", "embeddings", "models"
 *   {type: "budget", body: {messages, max_tokens}}   context_budget: the context a conversation takes now
 *   {type: "countTokens", text}                      count_tokens: {tokens}
 *   {type: "applyLora", name, bytes: ArrayBuffer (transferred), scale}   apply_lora: {adapters: [...]}
 *   {type: "removeLora", name}                       ("": all of them)   remove_lora: {adapters: [...]}
 *   {type: "stop"}                                   (no rid: acts on the running request at once)
 * Messages out:
 *   {type: "status", text}                           start-up progress
 *   {type: "reply", rid, ok, ...result | error}      one per request
 *   {type: "event", rid, event}                      a request's answer: each chunk of a stream, or the whole
 *                                                    response
 *   {type: "fatal", message}                         Python itself is broken: the page restarts the worker
 */
(function (Pychat) {
  "use strict";

  importScripts("util.js", "pyodide_runtime.js", "python_snapshot.js", "startup_timeline.js", "worker_error.js",
                "worker_protocol.js", "tensor_parallel.js");
  const now = Pychat.StartupTimeline.now;  // the start-up timeline's clock, the page's too
  const scriptsLoaded = now();  // "worker start" ends here

  const API_FUNCTIONS = ["check_fit", "load_model", "begin_request", "next_chunk", "context_budget", "count_tokens",
                         "apply_lora", "remove_lora"];
  let py = null;          // the facade from bootPython
  let api = null;         // {name: callable} for the pychat_wasm.browser.chat_worker functions, fetched once
  let stopRequested = false;
  let pool = {rank: 0, workers: 1, shared: null};
  let collective = null;  // set while this worker holds a shard of a model split across workers
  let snapshotWanted = null;  // the indexURL to save a Python snapshot of, after a boot that restored none

  // self.py, self.api and self.pool: these three as they are now (getters), for the browser console and the
  // end-to-end tests, which evaluate `pool.rank` and `py.runPython(...)` and patch `api.next_chunk` in this
  // worker (tests/support/e2e_helpers.py, tests/browser/test_e2e_storage.py).
  Object.defineProperties(self, {py: {get: () => py}, api: {get: () => api}, pool: {get: () => pool}});

  const callApi = (name, ...args) => Pychat.checked(api[name](...args));

  const handlers = {
    async boot({indexURL, wheelURLs, rank = 0, workers = 1, shared = null}) {
      pool = {rank, workers, shared};
      const started = performance.now();
      const marks = [["worker start", scriptsLoaded]];  // [[phase, when it ended], ...]
      try {
        py = await Pychat.bootPython({indexURL, wheelURLs, snapshot: Pychat.PythonSnapshot,
                                      onPhase: (name) => marks.push([name, now()]),
                                      onStatus: (text) => postMessage({type: "status", text})});
      } catch (error) {
        throw Pychat.userFacing(error);  // e.g. offline without cached files: no restart loop
      }
      snapshotWanted = py.restored || rank > 0 ? null : indexURL;
      api = py.importFunctions("pychat_wasm.browser.chat_worker", API_FUNCTIONS);
      marks.push(["engine import", now()]);
      return {versions: py.versions, seconds: (performance.now() - started) / 1000, marks};
    },

    /* The fit report of a model from its first bytes (fit_check.js), or HeaderTruncatedError: send more. */
    async checkFit({header, fileSize, options}) {
      if (!api) throw Pychat.userFacing(new Error("Python is not running"));
      return Pychat.checked(py.callWithBytes(api.check_fit, new Uint8Array(header), fileSize,
                                             JSON.stringify(options || {})));
    },

    async load({name, bytes, options}) {
      if (!api) throw Pychat.userFacing(new Error("Python is not running"));
      const received = now();
      const started = performance.now();
      const connect = (workers) => {  // Python asks once it knows how many workers the model splits into
        collective = Pychat.TensorParallel.collective({shared: pool.shared, rank: pool.rank, workers, heap: py.heapF32});
        return collective;
      };
      collective = null;
      const result = Pychat.checked(py.callWithBytes(api.load_model, new Uint8Array(bytes), name,
                                                     JSON.stringify(options || {}), connect));
      saveSnapshot();
      return {info: result.info, idle: Boolean(result.idle), workers: result.workers,
              seconds: (performance.now() - started) / 1000, marks: loadMarks(received, result.phases)};
    },

    /* A LoRA adapter on the loaded model, beside its weights (they are not reloaded); each worker of a split
     * model keeps its shard's part. AdapterError / AdapterMismatchError change nothing. */
    async applyLora({name, bytes, scale = 1}) {
      return Pychat.checked(py.callWithBytes(api.apply_lora, new Uint8Array(bytes), name, scale));
    },

    async removeLora({name = ""}) {
      return callApi("remove_lora", name);
    },

    async budget({body}) {
      return callApi("context_budget", JSON.stringify(body));
    },

    async countTokens({text}) {
      return callApi("count_tokens", text);
    },

    /* One of OpenAI's requests, answered by the library's LLM: its chunks (or its one whole response) as events. */
    async request({rid, kind, body}) {
      return steps(() => callApi("begin_request", kind, JSON.stringify(body)), (stop) => {
        const reply = callApi("next_chunk", stop);
        if (reply.item) postMessage({type: "event", rid, event: reply.item});
        return reply.done ? {} : null;
      });
    },

    stop() {  // unqueued: acts on the running request at once
      stopRequested = true;
    },
  };

  /* Once a model is loaded, a throw-away worker saves a Python snapshot for the next starts (python_snapshot.js);
   * a failure there costs only the faster start. */
  function saveSnapshot() {
    if (!snapshotWanted) return;
    const maker = new Worker("snapshot_worker.js");
    maker.onerror = (event) => event.preventDefault();
    maker.postMessage({indexURL: new URL(snapshotWanted, self.location.href).href});
    snapshotWanted = null;
  }

  /* A load's marks for the start-up timeline: the bytes handed over (received), copied into the wasm heap, then
   * Python's phases ([[name, seconds], ...]), counted back from now. */
  function loadMarks(received, phases) {
    const ends = [];
    let at = now();
    for (let i = phases.length - 1; i >= 0; i--) {
      ends[i] = [phases[i][0], at];
      at -= phases[i][1] * 1000;
    }
    return [["model hand-over", received], ["copy into wasm", at], ...ends];
  }

  /* Run begin(), then step(stop) once per token, with a turn of the event loop between two steps where a Stop
   * message gets in, until step returns the reply. */
  async function steps(begin, step) {
    try {
      begin();
      stopRequested = false;
      for (;;) {
        const stop = collective ? collective.fromFirst(stopRequested ? 1 : 0) === 1 : stopRequested;  // worker 0 decides
        const reply = step(stop);
        if (reply) return reply;
        await Pychat.nextTask();
      }
    } catch (error) {
      if (collective) collective.abort();  // the other workers wait for this one at a barrier: free them
      throw error;
    }
  }

  Pychat.serveRequests(handlers, {unqueued: ["stop"]});
})(self.Pychat = self.Pychat || {});
