/*
 * train_files.js: what the Train panel trains on: the built-in corpus, or the user's own files (picked or
 * dropped). It owns the list of chosen files. A file is checked before it joins the list: its size against
 * Python's limits (limits().max_data_bytes, and max_total_data_bytes for all chosen files together) before a
 * byte of it is read, then that it is UTF-8 text, then
 * by Python itself (describe_files: the same parser training uses). A file that fails any check is not
 * added, and the message says why; nothing else changes.
 *
 *     const data = new Pychat.TrainingFiles({limits: () => bootedWorker.limits,    // a promise of limits()
 *                                            describe: (files) => worker.request("describe", {files}),
 *                                            onChange: (error) => ...});           // the list or the source changed
 *     await data.add(fileList);   // throws TrainingFileError with a message for the panel
 *     data.payload();             // [] for the built-in corpus, else [{name, text}, ...]
 */
(function (Pychat) {
  "use strict";

  const {WorkerError, formatBytes} = Pychat;  // worker_error.js, util.js

  class TrainingFileError extends Error {}

  class TrainingFiles {
    constructor({limits, describe, onChange = () => {}}) {
      this.limits = limits;
      this.describe = describe;
      this.onChange = onChange;
      this.files = [];  // [{name, size, text, documents, conversations}]
    }

    $(id) {
      return document.getElementById(id);
    }

    get useBuiltin() {
      return this.$("train-source-builtin").checked;
    }

    wire() {
      const dropZone = this.$("train-drop-zone");
      this.$("train-files").onchange = (e) => { this.addFromPage(e.target.files); e.target.value = ""; };
      dropZone.addEventListener("dragover", (e) => { e.preventDefault(); e.stopPropagation(); });
      dropZone.addEventListener("drop", (e) => {
        e.preventDefault();
        e.stopPropagation();  // training data, not a model: the page's own drop handler must not see it
        if (e.dataTransfer && e.dataTransfer.files.length) this.addFromPage(e.dataTransfer.files);
      });
      for (const radio of document.querySelectorAll("input[name=train-source]")) radio.onchange = () => this.onChange();
    }

    /* add(), with its error shown by the panel (onChange receives it). */
    async addFromPage(fileList) {
      try {
        await this.add(fileList);
        this.onChange();
      } catch (error) {
        this.onChange(error);
      }
    }

    /* Check every file, then add all of them (and use them), or none. */
    async add(fileList) {
      const files = Array.from(fileList);
      const limits = files.length ? await this.limits() : {max_data_bytes: 0, max_total_data_bytes: 0};
      const maxBytes = limits.max_data_bytes;
      const names = new Set(files.map((f) => f.name));
      const total = this.files.filter((f) => !names.has(f.name)).concat(files).reduce((sum, f) => sum + f.size, 0);
      if (total > limits.max_total_data_bytes) {  // all files of a run together, before any is read
        throw new TrainingFileError(`These files take ${formatBytes(total)} together; the training files of a run ` +
                                    `are limited to ${formatBytes(limits.max_total_data_bytes)} (they are held in memory).`);
      }
      const incoming = [];
      for (const file of files) {
        if (file.size > maxBytes) {  // from the File's size: the file is not read at all
          throw new TrainingFileError(`${file.name} is ${formatBytes(file.size)}; training files are limited to ` +
                                      `${formatBytes(maxBytes)} (they are held in memory).`);
        }
        let text;
        try {
          text = new TextDecoder("utf-8", {fatal: true}).decode(await file.arrayBuffer());
        } catch (error) {
          throw new TrainingFileError(`${file.name} is not UTF-8 text.`);
        }
        incoming.push({name: file.name, size: file.size, text});
      }
      if (!incoming.length) return;
      let reply;
      try {
        reply = await this.describe(incoming.map(({name, text}) => ({name, text})));
      } catch (error) {
        throw new TrainingFileError(WorkerError.is(error, "TrainingDataError") ? error.message + "."
                                                                       : `Could not check the file: ${error.message}`);
      }
      reply.files.forEach((counts, i) => Object.assign(incoming[i], counts));
      this.files = this.files.filter((f) => !names.has(f.name)).concat(incoming);  // a file chosen again: replaced
      this.$("train-source-files").checked = true;
      this.render();
    }

    remove(name) {
      this.files = this.files.filter((f) => f.name !== name);
      if (!this.files.length) this.$("train-source-builtin").checked = true;
      this.render();
      this.onChange();
    }

    /* The files argument of begin_training: [] means the built-in corpus. */
    payload() {
      if (this.useBuiltin) return [];
      if (!this.files.length) throw new TrainingFileError("Choose a training file first, or the built-in corpus.");
      return this.files.map(({name, text}) => ({name, text}));
    }

    render() {
      const {element} = Pychat.PageUI;
      const list = this.$("train-file-list");
      list.replaceChildren();
      for (const file of this.files) {
        const item = element("li");
        item.dataset.name = file.name;
        item.append(element("span", `${file.name} · ${formatBytes(file.size)} · ${file.documents} documents, ` +
                                    `${file.conversations} conversations`));
        const remove = element("button", "Remove");
        remove.type = "button";
        remove.onclick = () => this.remove(file.name);
        item.append(remove);
        list.appendChild(item);
      }
      this.$("train-source-files").disabled = !this.files.length;
    }
  }

  Object.assign(Pychat, {TrainingFiles});
})(self.Pychat = self.Pychat || {});
