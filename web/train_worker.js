/*
 * train_worker.js: the classic Web Worker that trains a model from scratch. It has a Pyodide of its own
 * (through pyodide_runtime.js), so chat keeps working in worker.js and each worker has its own 4 GiB heap.
 * The Python side is pychat_wasm.browser.train_worker. The step loop lives here: one train_for(SLICE_SECONDS)
 * call, a progress event to the page, a turn of the event loop (where Stop, Save now and file checks get
 * in), and again. A stopped run stays in memory: Continue is another "train" request.
 *
 * Messages in (from worker_client.js: new PythonWorker({script: "train_worker.js"})), each with a request id:
 *   {type: "boot", indexURL, wheelURLs}      -> {limits: {max_data_bytes, presets: [{name, steps, ...}]}}
 *   {type: "start", options, files}          -> the new run's plan; options {preset, name, seed},
 *                                               files [{name, text}], [] = the built-in corpus
 *   {type: "finetune", base, baseName, options, files}
 *                                            -> the plan of a run fine-tuning the model whose GGUF bytes are
 *                                               `base` (an ArrayBuffer, transferred); options {epochs, lr,
 *                                               rank, targets, seq_len, batch_size, seed, memory_limit}
 *   {type: "train"}                          -> {step, total_steps, finished}, after progress events, when
 *                                               the run is finished or stopped
 *   {type: "describe", files}                -> {files: [{name, documents, conversations}]}    (unqueued)
 *   {type: "model", ggmlType}                -> {bytes: ArrayBuffer (transferred)}: the run's model as a
 *                                               GGUF file, as it stands, its weights as ggmlType
 *                                               ("F32" unless given; "Q8_0" for fine-tuned)     (unqueued)
 *   {type: "adapter", name}                  -> {bytes: ArrayBuffer (transferred)}: a fine-tune's LoRA adapter
 *                                               alone, as llama.cpp's adapter GGUF named `name`  (unqueued)
 *   {type: "stop"}                           (no request id) the running "train" ends after its slice
 * "Unqueued" requests are answered between two slices of a running "train", not after it.
 * Messages out: {type: "status", text} while booting, {type: "reply", ...} per request,
 *   {type: "event", rid, event: {kind: "progress", records: [{step, phase, loss, tokens, seconds,
 *    validation?}], step, total_steps, finished}} during "train", {type: "fatal", message}.
 */
(function (Pychat) {
  "use strict";

  importScripts("pyodide_runtime.js", "worker_error.js", "worker_protocol.js");

  const SLICE_SECONDS = 0.5;  // Python time between two looks at the page's messages
  const API_FUNCTIONS = ["limits", "describe_files", "begin_training", "begin_finetune", "train_for", "model_bytes",
                         "adapter_bytes"];
  let py = null;
  let api = null;         // {name: callable} for the pychat_wasm.browser.train_worker functions
  let stopRequested = false;

  function checkedResult(replyJSON) {
    const {ok, ...result} = Pychat.checked(replyJSON);
    return result;
  }

  function callApi(name, ...args) {
    if (!api) throw Pychat.userFacing(new Error("Python is not running"));
    return checkedResult(api[name](...args));
  }

  const handlers = {
    async boot({indexURL, wheelURLs}) {
      try {
        py = await Pychat.bootPython({indexURL, wheelURLs, onStatus: (text) => postMessage({type: "status", text})});
      } catch (error) {
        throw Pychat.userFacing(error);
      }
      api = py.importFunctions("pychat_wasm.browser.train_worker", API_FUNCTIONS);
      return {limits: callApi("limits")};
    },

    start({options, files}) {
      return callApi("begin_training", JSON.stringify(options), JSON.stringify(files));
    },

    finetune({rid, base, baseName, options, files}) {
      if (!api) throw Pychat.userFacing(new Error("Python is not running"));
      // The base model first answers the replay questions: each answer is reported as it comes.
      const onReplay = (answered, total) => postMessage({type: "event", rid, event: {kind: "replay", answered, total}});
      // One copy into the wasm heap; the transferred buffer is dropped with this message.
      return checkedResult(py.callWithBytes(api.begin_finetune, new Uint8Array(base), baseName,
                                            JSON.stringify(options), JSON.stringify(files), onReplay));
    },

    async train({rid}) {
      stopRequested = false;
      for (;;) {
        const progress = callApi("train_for", SLICE_SECONDS);
        postMessage({type: "event", rid, event: {kind: "progress", ...progress}});
        const position = {step: progress.step, total_steps: progress.total_steps, finished: progress.finished};
        if (position.finished) return position;
        await Pychat.nextTask();
        if (stopRequested) return position;
      }
    },

    describe({files}) {
      return callApi("describe_files", JSON.stringify(files));
    },

    model({ggmlType = "F32"}) {
      if (!api) throw Pychat.userFacing(new Error("Python is not running"));
      const bytes = py.callForBytes(api.model_bytes, ggmlType);
      return {bytes: bytes.buffer, transfer: [bytes.buffer]};
    },

    adapter({name}) {
      if (!api) throw Pychat.userFacing(new Error("Python is not running"));
      const bytes = py.callForBytes(api.adapter_bytes, name);
      return {bytes: bytes.buffer, transfer: [bytes.buffer]};
    },

    stop() {
      stopRequested = true;
    },
  };

  Pychat.serveRequests(handlers, {unqueued: ["describe", "model", "adapter", "stop"]});
})(self.Pychat = self.Pychat || {});
