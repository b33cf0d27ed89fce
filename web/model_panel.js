/*
 * model_panel.js: the Models panel, a view that models.js's ModelController drives: the list of cached models
 * (Use / Remove), each with its LoRA adapters listed under it (applied or not, and Delete: adapters.js), a file
 * to choose or drop anywhere on the page (a model, or an adapter for the model in use), a URL to download, the
 * fit check's verdict and the badge of the model in use. The context length and the workers are the Settings
 * dialog's (model_settings.js). Every text that comes from outside (file names, model metadata) goes in via
 * textContent. The header's model picker (model_picker.js) is rendered with the list.
 *
 *     const panel = new Pychat.ModelPanel({onFile, onURL, onUse, onRemove, onAdapter});
 *     panel.wire();
 *     panel.render(records, inUseId, persistent);  // the cache's records (models and adapters)
 */
(function (Pychat) {
  "use strict";

  const {formatBytes, loadSaved, save} = Pychat;  // util.js
  const $ = (id) => document.getElementById(id);
  const SAVED_CACHED = "pychat.cached";  // ids of the complete models in the cache: an eviction shows as a gap

  class ModelPanel {
    constructor({onFile, onURL, onUse, onRemove, onAdapter}) {
      this.on = {onFile, onURL, onUse, onRemove, onAdapter};
      this.picker = new Pychat.ModelPicker($("model-picker"), onUse);
    }

    wire() {
      $("model-file").onchange = (e) => { if (e.target.files[0]) this.on.onFile(e.target.files[0]); e.target.value = ""; };
      $("url-form").onsubmit = (e) => { e.preventDefault(); if ($("model-url").value) this.on.onURL($("model-url").value); };
      document.addEventListener("dragover", (e) => e.preventDefault());
      document.addEventListener("drop", (e) => {
        e.preventDefault();
        if (e.dataTransfer.files[0]) this.on.onFile(e.dataTransfer.files[0]);
      });
    }

    showFit(name, text) {
      $("fit-status").textContent = `${name}: ${text}`;
    }

    showModel(spec, info) {
      const types = Object.keys(info.tensor_types || {}).join(", ");
      $("model-badge").textContent = `Model: ${spec.name} · ${info.architecture} · ${types}`;
    }

    /* The storage badge, and a notice when models cached on an earlier visit are gone (the browser evicted the
     * site's storage). */
    async showStorage(store, alertBox) {
      if (!store.persistent) {
        Pychat.PageUI.showStorageUnavailable(store.unavailable);
        return;
      }
      Pychat.PageUI.requestPersistentStorage();
      const cached = new Set((await store.list()).map((r) => r.id));
      const gone = loadSaved(SAVED_CACHED, []).filter((id) => !cached.has(id)).length;
      if (gone) {
        alertBox("notice", `The browser cleared this site's model cache since your last visit (${gone} ` +
                 `model${gone > 1 ? "s" : ""}): the model is downloaded again. Your conversation is kept.`);
      }
    }

    /* The cached models with name, size, architecture, quant types and Use / Remove buttons, and their adapters. */
    render(records, inUseId, persistent) {
      const adapters = records.filter((r) => r.adapter);
      const models = records.filter((r) => !r.adapter);
      if (persistent) save(SAVED_CACHED, models.filter((r) => r.complete).map((r) => r.id));
      this.picker.render(models, inUseId);
      const {element} = Pychat.PageUI;
      const list = $("models");
      list.replaceChildren();
      for (const record of models) {
        const info = record.info || {};
        const partial = record.complete ? "" : ` · partial: ${formatBytes(record.received)} of ${formatBytes(record.size)}`;
        const item = element("li");
        item.dataset.id = record.id;
        const trained = record.source === "trained" ? " · trained in this browser" : "";
        const check = record.complete && Pychat.HostChecksum.describe(record);
        const details = element("div", `${formatBytes(record.size)} · ${info.architecture || "?"} · ` +
          `${Object.keys(info.tensor_types || {}).join(", ") || "?"}${partial}${trained}${check ? " · " + check : ""}`,
          "details");
        const use = element("button", "Use");
        use.disabled = !record.complete && !record.url;
        use.onclick = () => this.on.onUse(record);
        const remove = element("button", "Remove");
        remove.onclick = () => this.on.onRemove(record);
        item.append(element("strong", record.name + (record.id === inUseId ? " (in use)" : "")), details, use, remove);
        const own = adapters.filter((a) => a.adapter.base === record.id);
        if (own.length) item.appendChild(this.renderAdapters(record, own, record.id === inUseId));
        list.appendChild(item);
      }
    }

    /* A model's adapters: name, size, a checkbox "Apply adapter NAME" (usable on the model in use) and Delete. */
    renderAdapters(model, adapters, inUse) {
      const {element} = Pychat.PageUI;
      const list = element("ul", undefined, "adapters");
      list.setAttribute("aria-label", `Adapters of ${model.name}`);
      for (const record of adapters) {
        const {applied} = record.adapter;
        const item = element("li");
        item.dataset.id = record.id;
        item.dataset.applied = String(applied);
        const trained = record.source === "trained" ? " · trained in this browser" : "";
        const details = element("div", `LoRA adapter · ${formatBytes(record.size)}${trained}`, "details");
        const toggle = element("input");  // checked: applied (to the model in use, or when its base is used)
        Object.assign(toggle, {type: "checkbox", checked: applied, disabled: !inUse,
                               title: inUse ? "" : `Use ${model.name} first`});
        toggle.setAttribute("aria-label", `Apply adapter ${record.name}`);
        toggle.onchange = () => this.on.onAdapter(record, toggle.checked ? "apply" : "remove");
        const label = element("label");
        label.append(toggle, " applied");
        const remove = element("button", "Delete");
        remove.setAttribute("aria-label", `Delete adapter ${record.name}`);
        remove.onclick = () => this.on.onAdapter(record, "delete");
        item.append(element("span", record.name, "adapter-name"), details, label, remove);
        list.appendChild(item);
      }
      return list;
    }
  }

  Object.assign(Pychat, {ModelPanel});
})(self.Pychat = self.Pychat || {});
