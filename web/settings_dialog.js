/*
 * settings_dialog.js: the Settings dialog (a modal <dialog>): the header's Settings button opens it; its Close
 * button, Escape and a click on the backdrop close it. It holds the system prompt (the conversation's, chat.js),
 * the sampling form, the stop strings and the response format (sampling_form.js), the model settings
 * (model_settings.js: context length and workers, with their own Apply) and the list of keyboard shortcuts;
 * those own their fields, this only opens and closes.
 *
 * Escape inside the dialog only closes it: it does not reach chat.js's Escape, which stops the answer being
 * written. A field being edited is left (blurred) before the dialog closes, so its change is taken as when
 * focus moves on (the system prompt is saved on change).
 *
 *     new Pychat.SettingsDialog(document.getElementById("settings-dialog"), document.getElementById("settings-open")).wire();
 */
(function (Pychat) {
  "use strict";

  class SettingsDialog {
    constructor(dialog, opener) {
      this.dialog = dialog;
      this.opener = opener;
    }

    wire() {
      const dialog = this.dialog;
      this.opener.onclick = () => dialog.showModal();
      dialog.querySelector("[data-close]").onclick = () => this.close();
      dialog.addEventListener("cancel", () => this.leaveField());  // Escape: the browser closes it next
      dialog.addEventListener("keydown", (e) => { if (e.key === "Escape") e.stopPropagation(); });
      dialog.addEventListener("click", (e) => { if (e.target === dialog) this.close(); });  // the backdrop
    }

    close() {
      this.leaveField();
      this.dialog.close();
    }

    leaveField() {
      const field = document.activeElement;
      if (field && this.dialog.contains(field)) field.blur();
    }
  }

  Object.assign(Pychat, {SettingsDialog});
})(self.Pychat = self.Pychat || {});
