/*
 * model_picker.js: the header's model picker, a <select> of the models in the cache with the one in use
 * chosen. Choosing another is the model list's Use (models.js switches, with its fit check and fallbacks);
 * while the page cannot switch (an answer is being written, a model loading) the choice goes back to the
 * model in use. model_panel.js renders it with the list, from the same records.
 *
 *     const picker = new Pychat.ModelPicker(document.getElementById("model-picker"), (record) => use(record));
 *     picker.render(records, inUseId);   // the cache's model records; use(record): false when refused, or a
 *                                        // promise that settles once the switch is done (or failed)
 */
(function (Pychat) {
  "use strict";

  class ModelPicker {
    constructor(select, onUse) {
      this.select = select;
      this.records = [];
      this.inUseId = null;
      select.onchange = async () => {
        const record = this.records.find((r) => r.id === select.value);
        if (record && record.id !== this.inUseId) await onUse(record);  // refused: false; else once it is done
        select.value = this.inUseId || "";  // the model in use, as the last render() showed it
      };
    }

    /* The models that can be used (complete, or downloadable), the one in use chosen; none yet: "Loading…". */
    render(records, inUseId) {
      this.records = records.filter((r) => r.complete || r.url);
      this.inUseId = inUseId;
      const options = this.records.map((r) => new Option(r.name, r.id));
      if (!inUseId) options.unshift(new Option("Loading…", ""));
      this.select.replaceChildren(...options);
      this.select.value = inUseId || "";
    }
  }

  Object.assign(Pychat, {ModelPicker});
})(self.Pychat = self.Pychat || {});
