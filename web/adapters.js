/*
 * adapters.js: LoRA adapters (llama.cpp's adapter GGUF files, pychat_wasm/model/lora.py) on the model in use.
 * An adapter is kept in the model cache beside the models (model_store.js), under the id of the base model it
 * was added to, and model_panel.js lists it under that model with Apply / Remove / Delete. Applying or removing
 * one asks every chat worker holding the model ("applyLora" / "removeLora", worker_pool.js): the base's
 * weights stay loaded, the adapter's low-rank products are computed beside them. Python checks an adapter
 * against the model in use and refuses one made for another base (AdapterMismatchError, naming both), which
 * changes nothing. Adapters applied when a model was last used are applied again after it loads (a reload, a
 * restart of Python, offline: all from the cache).
 *
 *     const adapters = new Pychat.AdapterController(models);   // models: the ModelController (models.js)
 *     await adapters.addFile(file, header);       // a dropped adapter file (header: check_fit's answer)
 *     await adapters.addTrained(name, bytes, base);  // a fine-tune's adapter (train_panel.js); true if applied
 *     await adapters.apply(record); await adapters.remove(record); await adapters.delete(record);
 *     await adapters.reapply(spec);               // after `spec` loaded: its adapters marked applied
 *
 * An adapter's record: the model store's, with adapter = {base: the base model's id, applied, scale}.
 */
(function (Pychat) {
  "use strict";

  const {WorkerError} = Pychat;  // worker_error.js

  const isAdapterError = (error) => WorkerError.is(error, "AdapterError") || WorkerError.is(error, "AdapterMismatchError");

  class AdapterController {
    constructor(models) {
      this.models = models;
    }

    get store() {
      return this.models.store;
    }

    /* The stored adapters of the model `baseId`, oldest first. */
    async of(baseId) {
      const records = await this.store.list();
      return records.filter((r) => r.adapter && r.adapter.base === baseId).sort((a, b) => a.added - b.added);
    }

    /* A dropped or chosen adapter file: applied to the model in use (Python checks that it fits it), then kept
     * under it. A refused file is not kept. */
    async addFile(file, header) {
      const base = this.models.model;
      await this.whileApplying(file.name, async () => {
        const bytes = await file.arrayBuffer();
        await this.models.python.request("applyLora", {name: file.name, bytes, scale: 1}, {transfer: [bytes]});
        try {
          await this.store.importFile(file, {id: this.idFor(base.id, file.name), info: header, source: "file",
                                             adapter: {base: base.id, applied: true, scale: 1}});
        } catch (error) {
          this.models.alertBox("error", `${error.message} ${file.name} is applied for this visit only.`);
        }
      });
    }

    /* A fine-tune's adapter of `base` (a model spec): kept under it, and applied when that model is in use
     * (after the answer being written, if any). Resolves to true when it is applied. */
    async addTrained(name, bytes, base) {
      const id = this.idFor(base.id, name);
      await this.store.importFile(new File([bytes], name), {id, source: "trained",
                                                            adapter: {base: base.id, applied: false, scale: 1}});
      await this.models.renderModels();
      const {answers} = this.models;
      if (answers.busy()) await answers.done();
      return this.apply(await this.store.get(id));
    }

    idFor(baseId, name) {
      return `adapter/${baseId}/${name}`;
    }

    /* Apply a stored adapter to its base, which must be the model in use; true when it is applied. */
    async apply(record) {
      if (!this.usable(record)) return this.unchanged();
      return this.whileApplying(record.name, async () => {
        const bytes = await this.store.readVerified(record.id);
        await this.models.python.request("applyLora", {name: record.name, bytes, scale: record.adapter.scale},
                                         {transfer: [bytes]});
        await this.mark(record, true);
      });
    }

    async remove(record) {
      if (!this.usable(record)) return this.unchanged();
      return this.whileApplying(record.name, async () => {
        await this.models.python.request("removeLora", {name: record.name});
        await this.mark(record, false);
      });
    }

    /* Out of the cache (and off the model first, when it is applied to the model in use). */
    async delete(record) {
      if (!this.models.idle()) return;
      if (record.adapter.applied && this.usable(record) && !await this.remove(record)) return;
      await this.store.remove(record.id);
      await this.models.renderModels();
    }

    /* The adapters of a model that leaves the cache go with it. */
    async forgetBase(baseId) {
      for (const record of await this.of(baseId)) await this.store.remove(record.id);
    }

    /* After `spec` loaded (its workers hold no adapter): the adapters applied when it was last used. One that
     * fails is reported and marked not applied; the model is used without it. */
    async reapply(spec) {
      for (const record of (await this.of(spec.id)).filter((r) => r.adapter.applied)) {
        try {
          const bytes = await this.store.readVerified(record.id);
          await this.models.python.request("applyLora", {name: record.name, bytes, scale: record.adapter.scale},
                                           {transfer: [bytes]});
        } catch (error) {
          if (WorkerError.is(error, "WorkerCrashed")) throw error;
          this.models.alertBox("error", `The adapter ${record.name} could not be applied again: ${error.message}`);
          if (await this.store.get(record.id)) await this.mark(record, false);
        }
      }
    }

    // ---- helpers ----------------------------------------------------------------------------------------------

    /* The adapter's base is the model in use and no answer is being written. */
    usable(record) {
      const {model} = this.models;
      return this.models.idle() && Boolean(model) && model.id === record.adapter.base;
    }

    /* Nothing was done: the list shows the adapters as they are (a checkbox clicked while an answer is written). */
    async unchanged() {
      await this.models.renderModels();
      return false;
    }

    async mark(record, applied) {
      await this.store.put({...record, adapter: {...record.adapter, applied}});
    }

    /* Run `change` (which asks the workers) with the chat paused; true when it succeeded. A refusal leaves the
     * model as it was; a crash is the crash handler's (models.js restarts Python). */
    async whileApplying(name, change) {
      const {models} = this;
      models.ready = false;
      models.setPhase("loading", `Changing the adapters of ${models.model.name} (${name})…`);
      try {
        await change();
        return true;
      } catch (error) {
        if (WorkerError.is(error, "WorkerCrashed")) return false;
        const what = isAdapterError(error) ? "refused" : "failed";
        models.alertBox("error", `The adapter ${name} was ${what}: ${error.message}`);
        return false;
      } finally {
        if (!models.python.crashed) models.showReady();
        await models.renderModels();
      }
    }
  }

  Object.assign(Pychat, {AdapterController});
})(self.Pychat = self.Pychat || {});
