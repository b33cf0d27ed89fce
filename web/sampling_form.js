/*
 * sampling_form.js: the Sampling panel, the settings and stop strings each answer is written with, and its
 * response format and tools (response_format.js checks them), all in the Settings dialog. Each input's name
 * is the engine's setting (top_k, seed, ...); its bounds and default come from manifest.json, that is from
 * the engine's SETTING_RULES and SamplingSettings, and what the user chose is saved in localStorage.
 *
 *     const form = new Pychat.SamplingForm(manifest);   // {sampling_defaults, settings_rules}
 *     form.wire();
 *     form.settings();   // {temperature: 0.7, ..., seed: null}: an empty field is null (the engine's default)
 *     form.stops();      // ["\nUser:", ...]
 *     form.responseFormat();   // null | {type: "json_object"} | {type: "json_schema", json_schema: {name, schema, strict}}
 *     form.tools();            // null | [{type: "function", function: {name, ...}}, ...]
 *     // both throw a SettingsError saying what is wrong when an editor holds no valid JSON of the right shape
 */
(function (Pychat) {
  "use strict";

  const {loadSaved, save, ResponseFormat} = Pychat;  // util.js, response_format.js
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
      const format = saved.format || {};  // as typed: {kind, schema, tools}
      (this.formatInput(format.kind) || this.formatInput("text")).checked = true;  // an unknown kind: Text
      $("response-schema").value = format.schema || "";
      $("tools").value = format.tools || "";
      this.showChecks();
    }

    wire() {
      const keep = () => save(SAVED_SETTINGS, {...this.settings(), stop: this.stops(), format: this.typedFormat()});
      $("settings").oninput = keep;
      $("stop-strings").oninput = keep;
      $("response-format").oninput = () => { this.showChecks(); keep(); };
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

    /* The response_format the answers are asked for (see the top); a SettingsError if the schema is wrong. */
    responseFormat() {
      return checked(ResponseFormat.check(this.formatKind(), $("response-schema").value));
    }

    /* The tools the model may call, or null; a SettingsError if the editor holds no array of function tools. */
    tools() {
      return checked(ResponseFormat.checkTools($("tools").value));
    }

    formatKind() {
      return $("response-format").querySelector("input[name=response-format]:checked").value;
    }

    formatInput(kind) {
      return Array.from($("response-format").querySelectorAll("input[name=response-format]")).find((i) => i.value === kind);
    }

    /* The response format group as typed (saved so, also when it is not valid yet). */
    typedFormat() {
      return {kind: this.formatKind(), schema: $("response-schema").value, tools: $("tools").value};
    }

    /* The schema editor shows with JSON Schema only; each editor says what is wrong with it, as you type. */
    showChecks() {
      const kind = this.formatKind();
      $("response-schema-field").hidden = kind !== "json_schema";
      showError($("response-schema-message"), kind === "json_schema" && ResponseFormat.check(kind, $("response-schema").value).error);
      showError($("tools-message"), ResponseFormat.checkTools($("tools").value).error);
    }

    fill(values) {
      for (const input of this.inputs()) {
        input.value = values[input.name] === null || values[input.name] === undefined ? "" : values[input.name];
      }
    }
  }

  /* A refused setting of the form, with the message to show (error.name "SettingsError"). */
  class SettingsError extends Error {
    constructor(message) {
      super(message);
      this.name = "SettingsError";
    }
  }

  function checked({value, error}) {
    if (error) throw new SettingsError(error);
    return value;
  }

  function showError(box, error) {
    box.textContent = error || "";
    box.hidden = !error;
  }

  Object.assign(Pychat, {SamplingForm});
})(self.Pychat = self.Pychat || {});
