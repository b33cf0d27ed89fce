/*
 * model_settings.js: the Settings dialog's Model section: the context length asked of every model (empty: the
 * model's own) and how many workers split each token ("auto": one per core), both saved in localStorage, which
 * is their one owner: models.js reads them at every load. An edit is not in effect until Apply, which saves it
 * and has the model in use reloaded with it (more or fewer workers: a fresh Python; another context: the same
 * Python loads the model again, after its fit check); while no model can be reloaded (one is loading, an answer
 * is being written) Apply saves nothing and says to apply once it is ready. Closing the dialog without Apply puts
 * the fields back to what is in effect.
 *
 *     const settings = new Pychat.ModelSettings({canApply: () => ready, onApply: ({workers, context}) => name});
 *     settings.wire();  // onApply gets which of the two changed, once saved; returns the model it reloads
 *     settings.contextLength();  // a number, or null: the model's own
 *     settings.workers();        // "auto" or a count, as a string
 */
(function (Pychat) {
  "use strict";

  const {loadSaved, save} = Pychat;  // util.js
  const $ = (id) => document.getElementById(id);
  const SAVED_CONTEXT = "pychat.context";  // the context length asked for, or null: the model's default
  const SAVED_WORKERS = "pychat.workers";  // "auto" or how many workers split each token

  /* The context length typed, or null for the model's default: "512" -> 512, "" -> null. */
  function typedContext(text) {
    const value = Number(text);
    return value > 0 ? Math.floor(value) : null;
  }

  class ModelSettings {
    constructor({canApply, onApply}) {
      this.canApply = canApply;
      this.onApply = onApply;
    }

    contextLength() {
      return loadSaved(SAVED_CONTEXT, null);
    }

    workers() {
      return loadSaved(SAVED_WORKERS, "auto");
    }

    wire() {
      const select = $("workers");
      const cores = Math.max(1, navigator.hardwareConcurrency || 1);
      const isolated = Pychat.WorkerPool.canShare();
      const choices = [["auto", `auto (${isolated ? cores : 1})`]];
      for (let n = 1; n <= cores; n++) choices.push([String(n), String(n)]);
      select.replaceChildren(...choices.map(([value, label]) => new Option(label, value)));
      select.disabled = !isolated;
      $("workers-hint").textContent = isolated
        ? "Each token is split between the workers: one per core is fastest."
        : "One worker: several need a cross-origin isolated page (it is after the first visit, once the " +
          "service worker serves it; reload).";
      this.showSaved();
      for (const field of [$("context-length"), select]) field.oninput = field.onchange = () => this.edited();
      $("model-settings").onsubmit = (e) => { e.preventDefault(); this.apply(); };
      $("settings-dialog").addEventListener("close", () => this.showSaved());
    }

    /* The fields as they are in effect, nothing pending. */
    showSaved() {
      $("context-length").value = this.contextLength() || "";
      $("workers").value = this.workers();
      $("model-settings-apply").disabled = true;
      $("model-settings-status").textContent = "";
    }

    /* What the fields say that is not in effect yet: {workers, context}, each true when it differs. */
    pending() {
      return {workers: $("workers").value !== this.workers(),
              context: typedContext($("context-length").value) !== this.contextLength()};
    }

    edited() {
      const {workers, context} = this.pending();
      $("model-settings-apply").disabled = !(workers || context);
      $("model-settings-status").textContent = workers || context
        ? "Not in effect yet: Apply reloads the model in use with them." : "";
    }

    apply() {
      const changed = this.pending();
      if (!changed.workers && !changed.context) return;
      if (!this.canApply()) {
        $("model-settings-status").textContent =
          "Not in effect yet: Apply once the model is ready (it is loading, or an answer is being written).";
        return;
      }
      save(SAVED_WORKERS, $("workers").value);
      save(SAVED_CONTEXT, typedContext($("context-length").value));
      this.showSaved();
      $("model-settings-status").textContent = `Applied: ${this.onApply(changed)} is reloaded with them.`;
    }
  }

  Object.assign(Pychat, {ModelSettings});
})(self.Pychat = self.Pychat || {});
