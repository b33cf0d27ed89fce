/*
 * models.js: the model in use. The ModelController owns the current model and whether it takes questions
 * (`ready`), and every way to change it: the saved or default model at start-up, Use in the model list or the
 * header's picker, a dropped or chosen file, a URL (on an origin the deploy allows: model_origins.js), the
 * catalog (model_catalog.js), a model the Train panel made, the model settings applied (model_settings.js). A
 * model's bytes come from the cache or are downloaded with resume into it (model_download.js), after its header
 * was checked to fit (fit_check.js). When something fails (a rejected file, a failed download, a crashed
 * worker) the page falls back on the model used before, else the default one. The Python workers that hold it
 * (their boot and crash policy) are python_workers.js's, the model list model_panel.js's, the LoRA adapters of
 * the model in use adapters.js's (`models.adapters`).
 *
 *     const models = new Pychat.ModelController({setPhase, alertBox, answers});
 *                    // answers: {busy: () => an answer is being written, done: () => its promise,
 *                    //           loaded: () => called once a model is loaded (the chat shows its budget)}
 *     await models.start(manifest, store);   // boots Python, loads the saved model (or the default one)
 *     models.ready; models.model; models.python;   // read-only for the others
 *     models.restart(); models.showReady(); await models.addTrainedModel(name, bytes);
 */
(function (Pychat) {
  "use strict";

  const {WorkerError, loadSaved, save} = Pychat;  // worker_error.js, util.js
  const SAVED_MODEL = "pychat.model";

  class ModelController {
    constructor({setPhase, alertBox, answers}) {
      this.setPhase = setPhase;
      this.alertBox = alertBox;
      this.answers = answers;
      this.manifest = null;
      this.store = null;      // the model cache (model_store.js)
      this.workers = null;    // the Python that holds the model (python_workers.js)
      this.model = null;      // spec of the model loaded in the workers
      this.timeline = new Pychat.StartupTimeline();  // where this start's seconds go, until the model is ready
      this.ready = false;     // it is loaded and takes questions
      this.adapters = new Pychat.AdapterController(this);
      this.settings = new Pychat.ModelSettings({canApply: () => this.idle() && Boolean(this.model),
                                                onApply: (changed) => this.applySettings(changed)});
      this.panel = new Pychat.ModelPanel({
        onFile: (file) => this.addModelFile(file),
        onURL: (url) => this.addModelURL(url),
        onUse: (record) => this.idle() && this.switchModel(record),
        onRemove: async (record) => {
          await this.store.remove(record.id);
          await this.adapters.forgetBase(record.id);
          this.renderModels();
        },
        onAdapter: (record, action) => this.adapters[action](record),  // apply, remove, delete
      });
    }

    get python() { return this.workers && this.workers.pool; }  // the WorkerPool in use

    get pythonStatus() { return this.workers ? this.workers.status : "starting"; }

    /* A model is ready and no answer is being written: a question may be asked, or the model switched. */
    idle() {
      return this.ready && !this.answers.busy();
    }

    async start(manifest, store) {
      this.manifest = manifest;
      this.store = store;
      this.panel.wire();
      this.settings.wire();
      this.workers = new Pychat.PythonWorkers({boot: manifest.boot, setPhase: this.setPhase, alertBox: this.alertBox,
                                               onCrash: (reason) => this.crashed(reason)});
      this.startPython();
      Pychat.ModelOrigins.explainBlocked(manifest.model_origins || [], (text) => this.alertBox("error", text));
      new Pychat.ModelCatalog(this).start();
      await this.panel.showStorage(store, this.alertBox);
      const savedId = loadSaved(SAVED_MODEL, null);
      const saved = savedId && await store.get(savedId);
      this.renderModels();
      await this.switchModel(saved && saved.complete ? saved : this.defaultSpec());
    }

    /* The model in this.model is loaded and the app takes questions. */
    showReady() {
      this.ready = true;
      if (!this.timeline.finished) {
        this.timeline.finish("ready");
        this.timeline.render();
      }
      const workers = this.python.workers;
      this.setPhase("ready", `Ready: ${this.model.name} · ${workers} worker${workers > 1 ? "s" : ""}`);
    }

    /* The page is about to switch to a new version: no new question, no model change. */
    takeNoQuestions() {
      this.ready = false;
    }

    defaultSpec() {
      const m = this.manifest.model;
      return {id: "default/" + m.name, name: m.name, url: m.url, size: m.size, sha256: m.sha256, source: "default",
              info: m.info};
    }

    // ---- switching models -----------------------------------------------------------------------------------

    /* The model's verified bytes: from the cache, or downloaded (resuming) into it; a damaged copy is deleted
     * and downloaded once more. Unless `headerChecked`, the download's first bytes go to Python's fit check,
     * which stops it when they are no GGUF model (a web page, say) and says what they are. */
    async obtainBytes(spec, {headerChecked}) {
      const checkStart = headerChecked ? null : Pychat.FitCheck.downloadStart(this.python, spec.name);
      for (let attempt = 0; ; attempt++) {
        const record = await this.store.get(spec.id);
        try {
          if (record && record.complete && (!spec.sha256 || record.sha256 === spec.sha256)) {
            this.setPhase("verifying", `Checking ${spec.name}…`);
            return await this.store.readVerified(spec.id, this.timeline);
          }
          if (!spec.url) {
            throw new Pychat.ModelStoreError("missing", `${spec.name} is no longer cached: add the file again.`);
          }
          this.setPhase("downloading", `Downloading ${spec.name}…`);
          const bytes = await Pychat.downloadModel(this.store, spec, {
            onProgress: Pychat.PageUI.showProgress, onNotice: (text) => this.alertBox("notice", text),
            options: this.manifest.download, checkStart});
          Pychat.PageUI.hideProgress();
          return bytes;
        } catch (error) {
          if (error.kind !== "corrupt" || !spec.url || attempt > 0) throw error;
          this.alertBox("notice", error.message + " Downloading it again.");
        }
      }
    }

    async switchModel(spec) {
      const previous = this.model;
      this.ready = false;
      try {
        const record = await this.store.get(spec.id);
        const download = spec.url && !(record && record.complete);
        let fit = download  // before the download
          ? await this.checkFit({name: spec.name, url: spec.url, stored: record ? record.received || 0 : 0}, previous)
          : null;
        const bytes = await this.obtainBytes(spec, {headerChecked: Boolean(fit && fit.checked)});
        if (!this.pythonStatus) this.timeline.mark("model bytes");  // Python was up first: it waited for them
        if (!fit) fit = await this.checkFit({name: spec.name, bytes}, previous);
        if (fit.freshHeap && previous) return this.restart(spec);  // now cached: loaded from there
        this.setPhase("loading", `Loading ${spec.name} into Python…`);
        const reply = await this.python.request("load", {name: spec.name, bytes, options: fit.options}, {transfer: [bytes]});
        this.timeline.marks(reply.marks);
        await this.modelLoaded(spec, reply.info);
      } catch (error) {
        await this.modelFailed(spec, error, previous);
      }
    }

    /* Does the model fit (fit_check.js)? Shows the verdict; resolves to {options: the load options (a shorter
     * context when only that fits), freshHeap, checked}, or rejects with the verdict (DoesNotFit), leaving the
     * model in use (`previous`) as it was. */
    async checkFit(source, previous) {
      this.setPhase("starting", "Starting Python…");
      await this.workers.booted;
      this.setPhase("verifying", `Checking whether ${source.name} fits…`);
      const asked = this.settings.contextLength();
      const verdict = await Pychat.FitCheck.run({python: this.python, store: this.store, ...source, contextLength: asked});
      this.timeline.mark("fit check");
      if (verdict.adapter) {
        if (source.file) return {adapter: verdict.adapter};  // addModelFile hands it to this.adapters
        throw new Error(`${source.name} is a LoRA adapter, not a model: add its file while its base model is in use`);
      }
      this.panel.showFit(source.name, verdict.text);
      if (!verdict.fits) {
        throw new WorkerError({type: "DoesNotFit", message: verdict.text, has_model: Boolean(previous)});
      }
      if (verdict.shorterContext) this.alertBox("notice", `${source.name} ${verdict.text}: it runs with that context.`);
      const contextLength = verdict.shorterContext || asked;
      return {options: contextLength ? {context_length: contextLength} : {}, freshHeap: verdict.freshHeap,
              checked: verdict.checked};
    }

    async modelLoaded(spec, info) {
      this.model = {...spec, info};
      save(SAVED_MODEL, spec.id);
      const record = await this.store.get(spec.id);
      if (record && !record.info) await this.store.put({...record, info});
      await this.adapters.reapply(this.model);
      this.answers.loaded();
      this.panel.showModel(spec, info);
      this.showReady();
      this.renderModels();
    }

    async modelFailed(spec, error, previous) {
      Pychat.PageUI.hideProgress();
      if (WorkerError.is(error, "WorkerCrashed")) return;  // the crash handler restarts everything
      this.alertBox("error", `Could not load ${spec.name}: ${error.message}`,
                    spec.url ? {label: "Retry", run: () => this.switchModel(spec)} : null);
      const refused = error instanceof WorkerError;  // by Python (or the fit check), not by the network or storage
      if (refused && spec.source !== "default") {
        await this.store.remove(spec.id);  // do not keep it
        this.renderModels();
      }
      // What to fall back on: the model used before, else the default one (unless that is what failed).
      const fallback = previous && previous.id !== spec.id ? previous
        : spec.source !== "default" ? this.defaultSpec() : null;
      // A failed download or a file Python rejected up front leaves the loaded model as it was.
      if (previous && (!refused || error.hasModel)) {
        this.model = previous;
        this.showReady();
      } else if (WorkerError.is(error, "MemoryError") && fallback) {
        this.restart(fallback);  // the wasm heap never shrinks: only a fresh worker gets the memory back
      } else if (fallback) {
        await this.switchModel(fallback);
      } else {
        this.setPhase("error", `No model loaded: ${error.message}`);
      }
    }

    // ---- adding models --------------------------------------------------------------------------------------

    async addModelFile(file) {
      if (!this.idle()) return;
      const spec = {id: `file/${file.name}/${file.size}`, name: file.name, url: "", source: "file"};
      const previous = this.model;
      this.ready = false;
      try {
        const {options, freshHeap, adapter} = await this.checkFit({name: file.name, file}, previous);  // before reading it whole
        if (adapter) return await this.adapters.addFile(file, adapter);  // on the model in use
        if (freshHeap && previous) {  // into the cache, then from there into a fresh Python (a rejection removes it)
          await this.store.importFile(file, {id: spec.id});
          return this.restart(await this.store.get(spec.id));
        }
        this.setPhase("loading", `Loading ${file.name} into Python…`);
        const bytes = await file.arrayBuffer();
        const reply = await this.python.request("load", {name: file.name, bytes, options}, {transfer: [bytes]});
        try {
          await this.store.importFile(file, {id: spec.id, info: reply.info});
        } catch (error) {
          this.alertBox("error", `${error.message} ${file.name} is loaded for this visit only.`);
        }
        await this.modelLoaded(spec, reply.info);
      } catch (error) {
        await this.modelFailed(spec, error, previous);
      }
    }

    /* A model the Train panel made: into the cache under its name (replacing an older one of that name), then
     * loaded for chat once the answer being written, if any, is done. Resolves to true when it is in use. */
    async addTrainedModel(name, bytes) {
      const id = "trained/" + name;
      await this.store.importFile(new File([bytes], name), {id, source: "trained"});
      await this.renderModels();
      if (this.answers.busy()) await this.answers.done();
      if (!this.ready) {
        this.alertBox("notice", `${name} is in the model list: choose Use once the current model is ready.`);
        return false;
      }
      await this.switchModel(await this.store.get(id));
      return Boolean(this.model && this.model.id === id);
    }

    addModelURL(url) {
      const address = new URL(url, location.href);
      const refused = Pychat.ModelOrigins.refusal(address, this.manifest.model_origins);  // before any request
      if (refused) {
        this.alertBox("error", refused);
        return;
      }
      const last = address.pathname.split("/").pop() || "model.gguf";
      let name = last;
      try { name = decodeURIComponent(last); } catch (e) { /* a malformed %-escape: the name as written */ }
      return this.switchModel({id: "url/" + url, name, url, source: "url"});
    }

    // ---- the model list ------------------------------------------------------------------------------------

    async renderModels() {
      this.panel.render(await this.store.list(), this.model && this.model.id, this.store.persistent);
    }

    // ---- the Python workers -------------------------------------------------------------------------------

    /* A fresh pool booting, its phases on this start's timeline. */
    startPython() {
      this.timeline.mark("app start");
      this.workers.start(this.settings.workers());
      this.workers.booted.then((reply) => this.timeline.marks(reply.marks), () => {});  // python_workers.js says why
    }

    /* A fresh Python (its heap all free) loading `spec`, by default the model in use. */
    restart(spec = this.model) {
      this.ready = false;
      this.model = null;  // the new workers hold no model yet
      this.timeline = new Pychat.StartupTimeline({origin: Pychat.StartupTimeline.now()});
      this.startPython();
      return this.switchModel(spec);
    }

    crashed(reason) {
      this.ready = false;
      const spec = this.model || this.defaultSpec();
      this.workers.crashed(reason, () => this.restart(spec));
    }

    /* The Settings dialog's model settings changed (model_settings.js): the model in use reloaded with them, in a
     * fresh Python when the workers changed. Returns its name. */
    applySettings({workers}) {
      const {name} = this.model;
      if (workers) this.restart();
      else this.switchModel(this.model);
      return name;
    }
  }

  Object.assign(Pychat, {ModelController});
})(self.Pychat = self.Pychat || {});
