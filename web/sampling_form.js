/*
 * sampling_form.js: the Sampling panel, the settings and stop strings each answer is written with. Each input's
 * name is the engine's setting (top_k, seed, ...); its bounds and default come from manifest.json, that is from
 * the engine's SETTING_RULES and SamplingSettings, and what the user chose is saved in localStorage.
 *
 *     const form = new Pychat.SamplingForm(manifest);   // {sampling_defaults, settings_rules}
 *     form.wire();
 *     form.settings();   // {temperature: 0.7, ..., seed: null}: an empty field is null (the engine's default)
 *     form.stops();      // ["\nUser:", ...]
 */
(function (Pychat) {
  "use strict";

  const {loadSaved, save} = Pychat;  // util.js
  const SAVED_SETTINGS = "pychat.settings";
  const $ = (id) => document.getElementById(id);

  class SamplingForm {
    /* The form's bounds (the engine's rules), then its values: the saved ones over the engine's defaults. */
    constructor({sampling_defaults, settings_rules}) {
      this.defaults = sampling_defaults;
      for (const input of this.inputs()) {
        const rule = settings_rules[input.name];
        input.min = rule.min;  // inclusive in HTML: Python refuses an excluded bound itself, and says why
        input.max = rule.max === null ? "" : rule.max;
        if (rule.whole) input.step = 1;
        if (rule.hint) input.title = rule.hint;
      }
      const saved = loadSaved(SAVED_SETTINGS, {});
      this.fill({...sampling_defaults, ...saved});
      $("stop-strings").value = (saved.stop || []).join("\n");
    }

    wire() {
      const keep = () => save(SAVED_SETTINGS, {...this.settings(), stop: this.stops()});
      $("settings").oninput = keep;
      $("stop-strings").oninput = keep;
      $("settings-reset").onclick = () => {
        this.fill(this.defaults);
        $("stop-strings").value = "";
        keep();
      };
    }

    inputs() {
      return $("settings").querySelectorAll("input[name]");
    }

    /* The form as numbers; an empty field is null (the engine's default, or a random seed). Python checks
     * them (the same check as the CLI's) and says what is wrong. */
    settings() {
      const settings = {};
      for (const input of this.inputs()) {
        const value = input.value.trim();
        settings[input.name] = value === "" ? null : Number(value);
      }
      return settings;
    }

    /* One stop string a line, as typed (a stop string may begin or end with spaces). */
    stops() {
      return $("stop-strings").value.split("\n").filter((line) => line !== "");
    }

    fill(values) {
      for (const input of this.inputs()) {
        input.value = values[input.name] === null || values[input.name] === undefined ? "" : values[input.name];
      }
    }
  }

  Object.assign(Pychat, {SamplingForm});
})(self.Pychat = self.Pychat || {});
