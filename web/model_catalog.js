/*
 * model_catalog.js: the model catalog in the Models panel. models.json (checked at build time by
 * build/model_catalog.py) lists known small GGUF chat models; each shows its size, licence, host and whether
 * its sha256 is known, a fit check from the header alone before any download (fit_check.js, in the Python of
 * models.js), and Download, which hands it to models.js like any model: resumed, checked against its size and
 * sha256 when the catalog states them (else its host's: host_checksum.js), kept in the model cache. An entry on an origin this deploy does not list
 * says which flag would allow it and offers nothing (model_origins.js). Every text goes in via textContent.
 *
 *     const catalog = new Pychat.ModelCatalog(models);   // models: the ModelController (models.js)
 *     await catalog.start();                               // reads models.json, fills #model-catalog
 */
(function (Pychat) {
  "use strict";

  const {formatBytes} = Pychat;  // util.js
  const CATALOG_URL = "models.json";
  const NOT_IDLE = "Try again once the model in use is ready and no answer is being written.";

  class ModelCatalog {
    constructor(models) {
      this.models = models;
      this.list = document.getElementById("model-catalog");
    }

    async start() {
      let entries;
      try {
        const response = await fetch(CATALOG_URL);
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        entries = (await response.json()).models;
      } catch (error) {
        this.list.replaceChildren(Pychat.PageUI.element("li", `The model catalog could not be read (${error.message}).`));
        return;
      }
      this.list.replaceChildren(...entries.map((entry) => this.render(entry)));
    }

    /* The spec models.js downloads and loads: the default model's own when the entry is that file. */
    spec(entry) {
      const url = new URL(entry.url, location.href).href;
      if (url === new URL(this.models.manifest.model.url, location.href).href) return this.models.defaultSpec();
      let name = new URL(url).pathname.split("/").pop();
      try { name = decodeURIComponent(name); } catch (e) { /* a malformed %-escape: the name as written */ }
      return {id: "url/" + url, name, url, size: entry.size || 0, sha256: entry.sha256 || "", source: "catalog"};
    }

    render(entry) {
      const {element} = Pychat.PageUI;
      const url = new URL(entry.url, location.href);
      const item = element("li");
      item.dataset.url = url.href;
      const size = entry.size ? formatBytes(entry.size) : "size from the server";
      const host = url.origin === location.origin ? "this site" : url.host;
      const verified = entry.sha256 ? "sha256 checked"
        : "no sha256 stated: checked if its host states one (LFS pointer, X-Linked-Etag)";
      const details = element("div", `${size} · ${entry.licence} · ${host} · ${verified}`, "details");
      const fit = element("div", "", "fit");
      fit.setAttribute("aria-live", "polite");
      const check = element("button", "Check fit");
      check.setAttribute("aria-label", `Check whether ${entry.name} fits`);
      const download = element("button", "Download");
      download.setAttribute("aria-label", `Download ${entry.name}`);
      const refused = Pychat.ModelOrigins.refusal(url.href, this.models.manifest.model_origins);
      if (refused) {
        fit.textContent = refused;
        check.disabled = download.disabled = true;
      }
      check.onclick = () => this.checkFit(entry, fit);
      download.onclick = () => {
        if (this.models.idle()) this.models.switchModel(this.spec(entry));
        else fit.textContent = NOT_IDLE;
      };
      item.append(element("strong", entry.name), details, element("div", entry.about, "details"), fit, check, download);
      return item;
    }

    /* The fit check's verdict on the entry's header, read with Range requests (fit_check.js), shown in `out`. */
    async checkFit(entry, out) {
      if (!this.models.idle()) {
        out.textContent = NOT_IDLE;
        return;
      }
      const spec = this.spec(entry);
      out.textContent = "Checking…";
      try {
        const record = await this.models.store.get(spec.id);
        const verdict = await Pychat.FitCheck.run({
          python: this.models.python, store: this.models.store, name: spec.name, url: spec.url,
          stored: record ? record.received || 0 : 0, contextLength: this.models.settings.contextLength()});
        out.textContent = verdict.adapter ? "a LoRA adapter, not a model" : verdict.text;
      } catch (error) {
        out.textContent = error.message;
      }
      out.dataset.checked = "true";
    }
  }

  Object.assign(Pychat, {ModelCatalog});
})(self.Pychat = self.Pychat || {});
