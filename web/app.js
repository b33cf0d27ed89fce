/*
 * app.js: the page. It starts the Python worker and, at the same time, gets the model's bytes (from
 * IndexedDB, or downloaded with resume into it), hands them to the worker, and keeps the app usable when
 * something fails: a rejected model file, a failed download, a crashed worker. The chat itself is chat.js;
 * training, in a worker of its own, is train_panel.js, which hands each model it makes to addTrainedModel();
 * new builds of the app are offered and switched to by app_update.js.
 * The page never waits on Python synchronously: everything Python does happens in worker.js.
 *
 * Start-up phases shown in #status[data-phase]: downloading, verifying, starting, loading, ready
 * (then generating / stopping during an answer, error when nothing works).
 */
(function (Pychat) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const {alertBox} = Pychat.PageUI;
  const SAVED_MODEL = "pychat.model";
  const SAVED_CACHED = "pychat.cached";  // ids of the complete models in the cache: an eviction shows as a gap
  const SAVED_CONTEXT = "pychat.context";  // the context length asked for, or null: the model's default
  const SAVED_WORKERS = "pychat.workers";  // "auto" or how many workers split each token
  const RESTARTS_PER_MINUTE = 2;

  const state = {
    manifest: null, store: null, python: null, booted: null, pythonStatus: "", phase: {phase: "starting", text: ""},
    model: null,            // spec of the model loaded in the worker
    ready: false, generating: false, turn: null, crashes: [],
    conversations: null,    // the saved conversations (conversation_store.js)
    conversation: null,     // the one on the page: {id, title, system_prompt, messages, ...}
  };
  self.pychat = state;  // for the browser console and the end-to-end tests
  const chat = state.chat = new Pychat.ChatController({state, setPhase, showReady, alertBox, restartPython});

  // ---- status ---------------------------------------------------------------------------------------------

  function setPhase(phase, text) {
    state.phase = {phase, text};
    const python = state.ready || !state.pythonStatus ? "" : ` (Python: ${state.pythonStatus})`;
    $("status").dataset.phase = phase;
    $("status").textContent = text + python;
    updateButtons();
  }

  /* The model in state.model is loaded and the app takes questions. */
  function showReady() {
    state.ready = true;
    const workers = state.python.workers;
    setPhase("ready", `Ready: ${state.model.name} · ${workers} worker${workers > 1 ? "s" : ""}`);
  }

  function updateButtons() {
    const idle = state.ready && !state.generating;
    $("send").disabled = !idle;
    $("stop").disabled = !state.generating;
    $("model-url-add").disabled = !idle;
    $("model-file").disabled = !idle;
  }

  // ---- models -------------------------------------------------------------------------------------------

  function defaultSpec() {
    const m = state.manifest.model;
    return {id: "default/" + m.name, name: m.name, url: m.url, size: m.size, sha256: m.sha256, source: "default",
            info: {architecture: m.architecture, tensor_types: m.quant_types}};
  }

  /* The model's verified bytes: from the cache, or downloaded (resuming) into it; a damaged copy is
   * deleted and downloaded once more. */
  async function obtainBytes(spec) {
    for (let attempt = 0; ; attempt++) {
      const record = await state.store.get(spec.id);
      try {
        if (record && record.complete && (!spec.sha256 || record.sha256 === spec.sha256)) {
          setPhase("verifying", `Checking ${spec.name}…`);
          return await state.store.readVerified(spec.id);
        }
        if (!spec.url) {
          throw new Pychat.ModelStoreError("missing", `${spec.name} is no longer cached: add the file again.`);
        }
        setPhase("downloading", `Downloading ${spec.name}…`);
        const bytes = await Pychat.downloadModel(state.store, spec, {onProgress: Pychat.PageUI.showProgress,
                                                                      onNotice: (text) => alertBox("notice", text),
                                                                      options: state.manifest.download});
        Pychat.PageUI.hideProgress();
        return bytes;
      } catch (error) {
        if (error.kind !== "corrupt" || !spec.url || attempt > 0) throw error;
        alertBox("notice", error.message + " Downloading it again.");
      }
    }
  }

  async function switchModel(spec) {
    const previous = state.model;
    state.ready = false;
    try {
      const record = await state.store.get(spec.id);
      const download = spec.url && !(record && record.complete);
      let fit = download  // before the download
        ? await checkFit({name: spec.name, url: spec.url, stored: record ? record.received || 0 : 0}, previous) : null;
      const bytes = await obtainBytes(spec);
      if (!fit) fit = await checkFit({name: spec.name, bytes}, previous);
      if (fit.freshHeap && previous) return restartPython(spec);  // now cached: loaded from there
      const options = fit.options;
      setPhase("loading", `Loading ${spec.name} into Python…`);
      const reply = await state.python.request("load", {name: spec.name, bytes, options}, {transfer: [bytes]});
      await modelLoaded(spec, reply.info);
    } catch (error) {
      await modelFailed(spec, error, previous);
    }
  }

  /* The context length asked for in #context-length, or null for the model's default. */
  function chosenContext() {
    const value = Number($("context-length").value);
    return value > 0 ? Math.floor(value) : null;
  }

  /* Does the model fit (fit_check.js)? Shows the verdict; resolves to {options: the load options (a shorter
   * context when only that fits), freshHeap}, or rejects with the verdict, leaving the model in use
   * (`previous`) as it was. */
  async function checkFit(source, previous) {
    setPhase("starting", "Starting Python…");
    await state.booted;
    setPhase("verifying", `Checking whether ${source.name} fits…`);
    const asked = chosenContext();
    const verdict = await Pychat.FitCheck.run({python: state.python, store: state.store, ...source,
                                              contextLength: asked});
    $("fit-status").textContent = `${source.name}: ${verdict.text}`;
    if (!verdict.fits) {
      throw new Pychat.WorkerRequestError({type: "DoesNotFit", message: verdict.text, hasModel: Boolean(previous)});
    }
    if (verdict.shorterContext) alertBox("notice", `${source.name} ${verdict.text}: it runs with that context.`);
    const contextLength = verdict.shorterContext || asked;
    return {options: contextLength ? {context_length: contextLength} : {}, freshHeap: verdict.freshHeap};
  }

  async function modelLoaded(spec, info) {
    state.model = {...spec, info};
    Pychat.PageUI.save(SAVED_MODEL, spec.id);
    const record = await state.store.get(spec.id);
    if (record && !record.info) await state.store.put({...record, info});
    chat.showStoredBudget();
    const types = Object.keys(info.tensor_types || {}).join(", ");
    $("model-badge").textContent = `Model: ${spec.name} · ${info.architecture} · ${types}`;
    showReady();
    renderModels();
  }

  async function modelFailed(spec, error, previous) {
    Pychat.PageUI.hideProgress();
    if (error.type === "WorkerCrashed") return;  // the crash handler restarts everything
    alertBox("error", `Could not load ${spec.name}: ${error.message}`,
             spec.url ? {label: "Retry", run: () => switchModel(spec)} : null);
    if (error instanceof Pychat.WorkerRequestError && spec.source !== "default") {
      await state.store.remove(spec.id);  // Python rejected the file: do not keep it
      renderModels();
    }
    // What to fall back on: the model used before, else the default one (unless that is what failed).
    const fallback = previous && previous.id !== spec.id ? previous : spec.source !== "default" ? defaultSpec() : null;
    // A failed download or a file Python rejected up front leaves the loaded model as it was.
    if (previous && (!(error instanceof Pychat.WorkerRequestError) || error.hasModel)) {
      state.model = previous;
      showReady();
    } else if (error.type === "MemoryError" && fallback) {
      restartPython(fallback);  // the wasm heap never shrinks: only a fresh worker gets the memory back
    } else if (fallback) {
      await switchModel(fallback);
    } else {
      setPhase("error", `No model loaded: ${error.message}`);
    }
  }

  async function addModelFile(file) {
    if (!state.ready || state.generating) return;
    const spec = {id: `file/${file.name}/${file.size}`, name: file.name, url: "", source: "file"};
    const previous = state.model;
    state.ready = false;
    try {
      const {options, freshHeap} = await checkFit({name: file.name, file}, previous);  // before reading it whole
      if (freshHeap && previous) {  // into the cache, then from there into a fresh Python (a rejection removes it)
        await state.store.importFile(file, {id: spec.id});
        return restartPython(await state.store.get(spec.id));
      }
      setPhase("loading", `Loading ${file.name} into Python…`);
      const bytes = await file.arrayBuffer();
      const reply = await state.python.request("load", {name: file.name, bytes, options}, {transfer: [bytes]});
      try {
        await state.store.importFile(file, {id: spec.id, info: reply.info});
      } catch (error) {
        alertBox("error", `${error.message} ${file.name} is loaded for this visit only.`);
      }
      await modelLoaded(spec, reply.info);
    } catch (error) {
      await modelFailed(spec, error, previous);
    }
  }

  /* A model the Train panel made: into the cache under its name (replacing an older one of that name), then
   * loaded for chat once the answer being written, if any, is done. Resolves to true when it is in use. */
  async function addTrainedModel(name, bytes) {
    const id = "trained/" + name;
    await state.store.importFile(new File([bytes], name), {id, source: "trained"});
    await renderModels();
    if (state.generating) await state.turn;
    if (!state.ready) {
      alertBox("notice", `${name} is in the model list: choose Use once the current model is ready.`);
      return false;
    }
    await switchModel(await state.store.get(id));
    return Boolean(state.model && state.model.id === id);
  }

  function addModelURL(url) {
    const address = new URL(url, location.href);
    if (address.origin !== location.origin) {  // the Content-Security-Policy (connect-src 'self') refuses it
      alertBox("error", `Models can be downloaded only from ${location.origin}: this page's security policy ` +
               `lets it connect nowhere else. Download ${address.href} yourself and drop the file here.`);
      return;
    }
    const last = address.pathname.split("/").pop() || "model.gguf";
    let name = last;
    try { name = decodeURIComponent(last); } catch (e) { /* a malformed %-escape: the name as written */ }
    return switchModel({id: "url/" + url, name, url, source: "url"});
  }

  async function renderModels() {
    const records = await state.store.list();
    if (state.store.persistent) Pychat.PageUI.save(SAVED_CACHED, records.filter((r) => r.complete).map((r) => r.id));
    Pychat.PageUI.renderModelList(records, state.model && state.model.id, {
      onUse: (record) => state.ready && !state.generating && switchModel(record),
      onRemove: async (record) => { await state.store.remove(record.id); renderModels(); },
    });
  }

  /* Models cached on an earlier visit that are gone now: the browser evicted the site's storage. */
  async function reportEvictedModels() {
    const cached = new Set((await state.store.list()).map((r) => r.id));
    const gone = Pychat.PageUI.loadSaved(SAVED_CACHED, []).filter((id) => !cached.has(id));
    if (gone.length) {
      alertBox("notice", `The browser cleared this site's model cache since your last visit (${gone.length} ` +
               `model${gone.length > 1 ? "s" : ""}): the model is downloaded again. Your conversation is kept.`);
    }
  }

  // ---- the Python worker --------------------------------------------------------------------------------

  function startPython() {
    state.pythonStatus = "starting";
    state.python = new Pychat.WorkerPool({
      size: Pychat.WorkerPool.defaultSize(Pychat.PageUI.loadSaved(SAVED_WORKERS, "auto")),
      onStatus: (text) => { state.pythonStatus = text; setPhase(state.phase.phase, state.phase.text); },
      onCrash: workerCrashed,
    });
    state.booted = state.python.request("boot", state.manifest.boot)
      .then((reply) => {
        state.pythonStatus = "";
        const {pyodide, python, numpy} = reply.versions;
        $("runtime-badge").textContent = `Runtime: Pyodide ${pyodide} · Python ${python} · numpy ${numpy}`;
        return reply;
      });
    state.booted.catch((error) => {
      if (error.type === "WorkerCrashed") return;
      setPhase("error", "Python could not start");
      alertBox("error", `Python could not start: ${error.message}`, {label: "Retry", run: () => location.reload()});
    });
  }

  function restartPython(spec) {
    if (state.python) state.python.terminate();
    state.ready = false;
    state.model = null;  // the new worker holds no model yet
    startPython();
    return switchModel(spec);
  }

  function workerCrashed(reason) {
    state.ready = false;
    const now = Date.now();
    state.crashes = state.crashes.filter((t) => now - t < 60000).concat(now);
    const spec = state.model || defaultSpec();
    if (state.crashes.length <= RESTARTS_PER_MINUTE) {
      alertBox("error", `The Python worker crashed (${reason}). Restarting it; your conversation is kept.`);
      restartPython(spec);
    } else {
      setPhase("error", "Python stopped");
      alertBox("error", `The Python worker crashed again (${reason}).`, {label: "Restart", run: () => restartPython(spec)});
    }
  }

  // ---- start-up -------------------------------------------------------------------------------------------

  /* The workers setting: "auto" (one per core) or a number; a change restarts Python with that many. */
  function wireWorkers() {
    const select = $("workers");
    const cores = Math.max(1, navigator.hardwareConcurrency || 1);
    const isolated = Pychat.WorkerPool.canShare();
    const choices = [["auto", `auto (${isolated ? cores : 1})`]];
    for (let n = 1; n <= cores; n++) choices.push([String(n), String(n)]);
    select.replaceChildren(...choices.map(([value, label]) => new Option(label, value)));
    select.value = Pychat.PageUI.loadSaved(SAVED_WORKERS, "auto");
    select.disabled = !isolated;
    $("workers-hint").textContent = isolated
      ? "Each token is split between the workers: one per core is fastest."
      : "One worker: several need a cross-origin isolated page (it is after the first visit, once the " +
        "service worker serves it; reload).";
    select.onchange = () => {
      Pychat.PageUI.save(SAVED_WORKERS, select.value);
      if (state.ready && !state.generating && state.model) restartPython(state.model);
    };
  }

  /* The context picker: a change reloads the model in use with that context (after its fit check). */
  function wireContext() {
    const input = $("context-length");
    input.value = Pychat.PageUI.loadSaved(SAVED_CONTEXT, null) || "";
    input.onchange = () => {
      Pychat.PageUI.save(SAVED_CONTEXT, chosenContext());
      if (state.ready && !state.generating && state.model) switchModel(state.model);
    };
  }

  function wireUp() {
    Pychat.PageUI.foldPanelsOnNarrowScreens();
    wireWorkers();
    wireContext();
    $("model-file").onchange = (e) => { if (e.target.files[0]) addModelFile(e.target.files[0]); e.target.value = ""; };
    $("url-form").onsubmit = (e) => { e.preventDefault(); if ($("model-url").value) addModelURL($("model-url").value); };
    document.addEventListener("dragover", (e) => e.preventDefault());
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer.files[0]) addModelFile(e.dataTransfer.files[0]);
    });
  }

  async function start() {
    const updates = new Pychat.AppUpdates({state, setPhase});
    wireUp();
    Pychat.PageUI.registerServiceWorker().then((registration) => registration && updates.watch(registration));
    try {
      const response = await fetch("manifest.json");
      if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status}`);
      state.manifest = await response.json();
      state.store = await Pychat.ModelStore.openOrKeepInMemory();
    } catch (error) {
      setPhase("error", "The app could not start");
      alertBox("error", `The app could not start: ${error.message}`);
      return;
    }
    await chat.restore(state.manifest.sampling_defaults);
    chat.wire();
    new Pychat.TrainPanel({boot: state.manifest.boot,
                           onModel: addTrainedModel,
                           base: {current: () => state.model, read: (spec) => state.store.readVerified(spec.id)}}).wire();
    startPython();
    if (state.store.persistent) {
      Pychat.PageUI.requestPersistentStorage();
      await reportEvictedModels();
    } else {
      Pychat.PageUI.showStorageUnavailable(state.store.unavailable);
    }
    const savedId = Pychat.PageUI.loadSaved(SAVED_MODEL, null);
    const saved = savedId && await state.store.get(savedId);
    renderModels();
    await switchModel(saved && saved.complete ? saved : defaultSpec());
  }

  start();
})(self.Pychat = self.Pychat || {});
