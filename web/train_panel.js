/*
 * train_panel.js: the Train panel. It owns the training worker (train_worker.js, started when the panel is
 * first opened) and the run's state on the page: its plan, its progress records, whether it runs. Start /
 * Stop / Continue / Save now drive the worker; every progress event updates the step counts, loss, tokens/s,
 * ETA and the loss chart. A finished run (or Save now) hands its GGUF bytes to onModel(name, bytes), which
 * models.js answers by caching the model and loading it for chat. A fine-tune saves its LoRA adapter alone
 * instead, through onAdapter(name, bytes, base spec) (adapters.js: listed under the base and applied to it), and
 * the merged model as well when #train-merged is checked.
 *
 *     const panel = new Pychat.TrainPanel({boot: {indexURL, wheelURLs}, defaults: manifest.finetune_defaults,
 *                                          onModel: async (name, bytes) => loadedForChat,
 *                                          onAdapter: async (name, bytes, base) => applied, base: {current, read}});
 *     panel.wire();
 *
 * Modes: MODES lists how a run is set up: "scratch" (a new model and tokenizer) and "finetune" (LoRA on the
 * model loaded for chat, whose bytes come from the model cache through `base`). A mode names its worker
 * request, builds its options from the form, adds what else the request needs (the base model's bytes,
 * transferred) and says how its result is stored (F32 for scratch models, Q8_0 for fine-tuned ones).
 *
 *     base: {current: () => spec of the chat model or null, read: async (spec) => its verified ArrayBuffer}
 *
 * self.pychatTrainingOverrides (unset on the page): options merged into a fine-tuning request, for the
 * end-to-end tests (e.g. {memory_limit: 1e6} to see the memory refusal).
 *
 * #train-status[data-state]: idle (no worker yet), starting, ready, preparing, training, stopping, paused,
 * saving, finished, error.
 */
(function (Pychat) {
  "use strict";

  const {WorkerError, formatBytes} = Pychat;  // worker_error.js, util.js

  /* "SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct.Q4_1" */
  const modelStem = (name) => name.replace(/\.gguf$/i, "");

  const MODES = {
    scratch: {
      request: "start", saveAs: "F32", dataLabel: "Built-in corpus (facts and short chats)",
      defaultName: () => "my-model",
      options: (panel) => ({preset: panel.$("train-preset").value, seed: 0,
                            name: panel.$("train-name").value.trim() || "my-model"}),
      payload: async () => ({}),
    },
    finetune: {
      request: "finetune", saveAs: "Q8_0",
      dataLabel: "The shipped example (40 chats about Tessmarrow, an invented town)",
      defaultName: (panel) => { const spec = panel.base.current(); return spec ? modelStem(spec.name) + "-tuned" : "tuned"; },
      // Python fills in what the form leaves out (rank, targets, batch, ...: protocol.FinetuneOptions); an empty
      // Epochs field (null) leaves the passes, like the replay, to the run's plan (train/finetune_plan.py).
      options: (panel) => ({epochs: Number(panel.$("train-epochs").value) || panel.defaults.epochs,
                            lr: Number(panel.$("train-lr").value) || panel.defaults.lr,
                            name: panel.$("train-name").value.trim() || MODES.finetune.defaultName(panel),
                            ...(self.pychatTrainingOverrides || {})}),
      /* The chat model's bytes from the model cache, moved (not copied) to the training worker. */
      async payload(panel) {
        const spec = panel.base.current();
        if (!spec) throw new Error("Load a model for chat first: fine-tuning starts from it.");
        let bytes;
        try {
          bytes = await panel.base.read(spec);
        } catch (error) {
          throw new Error(`${spec.name} is not in the model cache (${error.message}); add it again to fine-tune it.`);
        }
        return {base: bytes, baseName: spec.name, transfer: [bytes]};
      },
    },
  };
  const SPEED_WINDOW = 20;  // steps that tokens/s and the ETA are averaged over

  function formatDuration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  class TrainPanel {
    constructor({boot, defaults, onModel, onAdapter, base}) {
      this.boot = boot;
      this.defaults = defaults;  // fine-tuning's (manifest.json finetune_defaults)
      this.base = base;
      this.autoName = "my-model";  // the name the form was given for its mode; replaced when the mode changes
      this.onModel = onModel;
      this.onAdapter = onAdapter;
      this.worker = null;
      this.booted = null;    // promise of limits(), once the worker is asked to start
      this.state = {
        phase: "idle", mode: "", name: "", plan: null,  // the run: its mode, model name and plan (phases, size)
        base: null,  // a fine-tune's base model (spec)
        records: [], validations: [], step: 0, totalSteps: 0,
        trainingSeconds: 0,  // wall-clock time spent training (pauses excluded)
        saving: false,
      };
      this.lastProgressAt = 0;
      self.pychatTraining = this.state;  // for the browser console and the end-to-end tests
      this.chart = new Pychat.LossChart(this.$("train-chart"));
      this.data = new Pychat.TrainingFiles({
        limits: () => this.startWorker(),
        describe: (files) => this.worker.request("describe", {files}),
        onChange: (error) => (error ? this.message("error", error.message) : this.clearMessage()),
      });
    }

    $(id) {
      return document.getElementById(id);
    }

    wire() {
      const {epochs, lr, rank, targets, batch_size, seq_len} = this.defaults;
      this.$("train-epochs").value = epochs ?? "";  // null: the plan chooses from the data's size
      this.$("train-lr").value = lr;
      const adapted = {attn: "the attention", "attn+mlp": "the attention and MLP"}[targets] ||
                      "the attention (and the MLP for a small file)";  // null: the plan chooses
      this.$("train-recipe").textContent = `LoRA rank ${rank} on ${adapted}, batch ${batch_size} × ${seq_len} tokens`;
      this.data.wire();
      this.$("train-panel").addEventListener("toggle", () => { if (this.$("train-panel").open) this.startWorker(); });
      this.$("train-form").onsubmit = (e) => { e.preventDefault(); this.start(); };
      this.$("train-stop").onclick = () => this.stop();
      this.$("train-continue").onclick = () => this.train();
      this.$("train-save").onclick = () => this.save();
      this.$("train-mode").onchange = () => this.showMode();
      this.$("train-panel").addEventListener("toggle", () => this.showMode());
      this.showMode();
      this.show("idle", "Python for training starts when this panel is opened.");
    }

    /* The form's fields for the chosen mode; a name the user has not typed follows the mode (and base). */
    showMode() {
      const modeName = this.$("train-mode").value;
      const mode = MODES[modeName];
      this.$("train-scratch-options").hidden = modeName !== "scratch";
      this.$("train-finetune-options").hidden = modeName !== "finetune";
      this.$("train-builtin-label").textContent = mode.dataLabel;
      const spec = this.base.current();
      this.$("train-base").textContent = spec ? spec.name : "the model loaded for chat (none yet)";
      const name = this.$("train-name");
      if (name.value.trim() === this.autoName || !name.value.trim()) name.value = mode.defaultName(this);
      this.autoName = mode.defaultName(this);
    }

    // ---- the worker ---------------------------------------------------------------------------------------

    /* The training worker, booted once (again after a crash); resolves to Python's limits(). */
    startWorker() {
      if (this.booted) return this.booted;
      this.show("starting", "Starting Python for training…");
      this.worker = new Pychat.PythonWorker({
        script: "train_worker.js",
        onStatus: (text) => this.show("starting", `Starting Python for training (${text})…`),
        onCrash: (reason) => this.crashed(reason),
      });
      this.booted = this.worker.request("boot", this.boot).then(({limits}) => {
        this.limits = limits;
        this.renderPresets(limits.presets);
        this.$("train-limit").textContent = formatBytes(limits.max_data_bytes);
        this.show("ready", "Ready to train.");
        return limits;
      });
      this.booted.catch((error) => {
        if (WorkerError.is(error, "WorkerCrashed")) return;
        this.booted = null;
        this.show("error", `Python for training could not start: ${error.message}`);
      });
      return this.booted;
    }

    /* The run went with the worker; chat runs in a worker of its own and goes on. Start boots a new one. */
    crashed(reason) {
      Object.assign(this.state, {plan: null, saving: false});
      this.booted = null;
      this.show("error", "The training worker stopped; its run is lost. Start begins a new one.");
      this.message("error", `The training worker crashed (${reason}). Chat is not affected.`);
    }

    renderPresets(presets) {
      const select = this.$("train-preset");
      select.replaceChildren();
      for (const preset of presets) {
        const minutes = preset.steps * preset.seconds_per_step / 60;
        const option = Pychat.PageUI.element("option", `${preset.name}: ${preset.steps} steps, ` +
                                                       `about ${Math.max(1, Math.round(minutes))} min`);
        option.value = preset.name;
        select.appendChild(option);
      }
      select.onchange = () => this.describePreset();
      this.describePreset();
    }

    describePreset() {
      const preset = this.limits.presets.find((p) => p.name === this.$("train-preset").value);
      this.$("train-preset-hint").textContent = !preset ? "" : preset.max_examples
        ? `Trains on the first ${preset.max_examples} documents and ${preset.max_examples} chats of the data.`
        : "Trains on all of the data.";
    }

    // ---- the run ------------------------------------------------------------------------------------------

    async start() {
      const state = this.state;
      if (!["ready", "paused", "finished", "error"].includes(state.phase) || state.saving) return;
      this.showMode();  // the base model may have changed since the mode was chosen
      const modeName = this.$("train-mode").value;
      const mode = MODES[modeName];
      let files;
      try {
        files = this.data.payload();
        await this.startWorker();
      } catch (error) {
        this.message("error", error.message);
        return;
      }
      const options = mode.options(this);
      const before = {...this.$("train-status").dataset};
      this.clearMessage();
      this.show("preparing", modeName === "finetune" ? "Preparing the base model and the data…"
                                                     : "Preparing the data and the tokenizer…");
      let plan;
      try {
        const {transfer = [], ...extra} = await mode.payload(this);
        // Fine-tuning first asks the base model general questions whose answers it learns beside the data.
        const onEvent = (event) => this.show("preparing", "The base model answers general questions so that it " +
                                             `keeps them: ${event.answered} of ${event.total}…`);
        plan = await this.worker.request(mode.request, {options, files, ...extra}, {transfer, onEvent});
      } catch (error) {
        if (WorkerError.is(error, "WorkerCrashed")) return;
        this.message("error", `Training could not start: ${error.message}`);
        this.show(before.state, before.text);  // Python replaces a run only once the new one is set up
        return;
      }
      Object.assign(state, {plan, mode: modeName, name: options.name, base: this.base.current(), records: [],
                            validations: [], step: 0,
                            totalSteps: plan.total_steps, trainingSeconds: 0});
      this.render();
      await this.train();
    }

    async train() {
      const state = this.state;
      if (!state.plan || !["preparing", "paused"].includes(state.phase)) return;
      this.show("training", "Training…");
      this.lastProgressAt = performance.now();
      let reply;
      try {
        reply = await this.worker.request("train", {}, {onEvent: (event) => this.progress(event)});
      } catch (error) {
        if (WorkerError.is(error, "WorkerCrashed")) return;
        this.message("error", `Training stopped: ${error.message}`);
        this.show("paused", "Paused by an error.");
        return;
      }
      if (reply.finished) {
        this.show("saving", "Finished training; saving the model…");
        if (await this.save()) this.show("finished", `Finished: ${state.name} is in the model list.`);
        else this.show("finished", "Finished; saving failed: try Save now.");
      } else {
        this.show("paused", `Paused at step ${reply.step} of ${reply.total_steps}: Continue goes on from here.`);
      }
    }

    stop() {
      if (this.state.phase !== "training") return;
      this.worker.stop();
      this.show("stopping", "Stopping after the current steps…");
    }

    /* The run's model as it stands into the model cache, and loaded for chat; a fine-tune's adapter, under its base
     * (and its merged model, if asked). True when it was stored. */
    async save() {
      const state = this.state;
      if (!state.plan || state.saving) return false;
      state.saving = true;
      this.updateButtons();
      const step = state.step;
      try {
        const notes = [];
        if (state.mode === "finetune") {
          const {bytes} = await this.worker.request("adapter", {name: state.name});
          const applied = await this.onAdapter(state.name, new Uint8Array(bytes), state.base);
          notes.push(`Saved the adapter ${state.name} at step ${step} (${formatBytes(bytes.byteLength)}): it is ` +
                     `listed under ${state.base.name}${applied ? " and applied to it" : ""}.`);
        }
        if (state.mode !== "finetune" || this.$("train-merged").checked) {
          const {bytes} = await this.worker.request("model", {ggmlType: MODES[state.mode].saveAs});
          const inUse = await this.onModel(state.name, new Uint8Array(bytes));
          notes.push(`Saved ${state.name} at step ${step} (${formatBytes(bytes.byteLength)}): it is in ` +
                     `the model list${inUse ? " and in use for chat" : ""}.`);
        }
        this.message("notice", notes.join(" "));
        return true;
      } catch (error) {
        if (!WorkerError.is(error, "WorkerCrashed")) this.message("error", `Could not save ${state.name}: ${error.message}`);
        return false;
      } finally {
        state.saving = false;
        this.updateButtons();
      }
    }

    progress(event) {
      const state = this.state;
      for (const record of event.records) {
        state.records.push(record);
        if (record.validation) state.validations.push(record.validation);
      }
      const now = performance.now();
      state.trainingSeconds += (now - this.lastProgressAt) / 1000;
      this.lastProgressAt = now;
      state.step = event.step;
      state.totalSteps = event.total_steps;
      this.render();
    }

    // ---- what the panel shows -------------------------------------------------------------------------------

    show(phase, text) {
      this.state.phase = phase;
      const status = this.$("train-status");
      status.dataset.state = phase;
      status.dataset.text = text;
      status.textContent = text;
      this.updateButtons();
    }

    updateButtons() {
      const {phase, saving, plan} = this.state;
      this.$("train-start").disabled = !["ready", "paused", "finished", "error"].includes(phase) || saving;
      this.$("train-start").textContent = plan ? "Start over" : "Start";
      this.$("train-stop").disabled = phase !== "training";
      this.$("train-continue").disabled = phase !== "paused" || saving;
      this.$("train-save").disabled = !plan || saving || !["training", "paused", "finished"].includes(phase);
    }

    message(kind, text) {
      const box = this.$("train-message");
      box.hidden = false;
      box.dataset.kind = kind;
      box.textContent = text;
    }

    clearMessage() {
      this.$("train-message").hidden = true;
      this.$("train-message").textContent = "";
    }

    render() {
      const {records, validations, step, totalSteps, plan, trainingSeconds} = this.state;
      const last = records[records.length - 1];
      const recent = records.slice(-SPEED_WINDOW);
      const seconds = recent.reduce((sum, r) => sum + r.seconds, 0);
      const tokens = recent.reduce((sum, r) => sum + r.tokens, 0);
      const validation = validations[validations.length - 1];
      this.$("train-progress").max = Math.max(1, totalSteps);
      this.$("train-progress").value = step;
      this.$("train-step").textContent = `${step} of ${totalSteps}` + (last ? ` (${last.phase})` : "");
      this.$("train-loss").textContent = last ? last.loss.toFixed(4) : "–";
      this.$("train-validation").textContent = validation ? `${validation.loss.toFixed(4)} at step ${validation.step}` : "–";
      this.$("train-speed").textContent = seconds ? `${Math.round(tokens / seconds).toLocaleString("en-US")} tokens/s` : "–";
      this.$("train-elapsed").textContent = formatDuration(trainingSeconds);
      this.$("train-eta").textContent = seconds ? formatDuration((totalSteps - step) * seconds / recent.length) : "–";
      const phaseStarts = [];
      let start = 0;
      for (const phase of plan ? plan.phases : []) {
        phaseStarts.push([start, phase.name]);
        start += phase.steps;
      }
      this.$("train-plan").textContent = plan ? `${plan.parameters.toLocaleString("en-US")} parameters · ` +
        plan.phases.map((p) => `${p.name} ${p.steps} steps on ${p.examples} examples`).join(" · ") +
        (plan.explain ? "\n" + plan.explain.join("\n") : "") : "";  // fine-tuning: why the plan is what it is
      this.chart.draw({losses: records.map((r) => [r.step, r.loss]), validations: validations.map((v) => [v.step, v.loss]),
                       phaseStarts, totalSteps});
    }
  }

  Object.assign(Pychat, {TrainPanel});
})(self.Pychat = self.Pychat || {});
