/*
 * attachments.js: files attached to the message being written. Text files (.txt, .md, .csv, .json, source
 * code: UTF-8) and PDFs (their text, extracted by pdf.js in its worker: pdf_text.js) are picked with the Attach
 * button, dropped on the composer or pasted into it. Each one is shown as a chip above the input (its name, its
 * token count in the loaded model's vocabulary, a remove button); it is checked before it is read (its size),
 * and a message under the chips says why one was not taken.
 *
 * The attachments go with the user's message and are kept with it: {role: "user", content, attachments:
 * [{name, type, text, tokens}]}. What the model reads is promptText(message), the one owner of the format
 * (docs/chat.md, "Attachments"): each file as a fenced block headed by its name, before the user's text.
 *
 *     const tray = new Pychat.AttachmentTray({countTokens: (text) => ...,   // a promise of the token count
 *                                             onChange: () => ...});        // the chips changed (the meter)
 *     tray.wire();
 *     tray.files                                    // [{name, type, text, tokens}] attached now
 *     await tray.fits(message, budgetOf)            // false (and says which file) if it cannot fit the context
 *     Pychat.Attachments.promptText({content: "What is the code?", attachments: [{name: "a.txt", text: "42"}]})
 *       -> "File: a.txt\n```\n42\n```\n\nWhat is the code?"
 *     Pychat.Attachments.showChips(parent, attachments, before)   // a sent message's chips (no remove button)
 */
(function (Pychat) {
  "use strict";

  const {formatBytes} = Pychat;  // util.js

  const MAX_TEXT_BYTES = 1024 * 1024;       // a text file: a megabyte is far more than a context holds
  const MAX_PDF_BYTES = 20 * 1024 * 1024;   // a PDF: mostly fonts and images, its text is much smaller
  const PDF_TYPE = "application/pdf";
  const TEXT_EXTENSIONS = ["txt", "md", "markdown", "csv", "tsv", "json", "jsonl", "xml", "html", "css", "js", "mjs",
                           "ts", "py", "ipynb", "c", "h", "cc", "cpp", "hpp", "rs", "go", "java", "kt", "rb", "php",
                           "sh", "sql", "yaml", "yml", "toml", "ini", "cfg", "log", "tex", "r", "swift", "lua", "cs"];
  const ACCEPT = TEXT_EXTENSIONS.map((ext) => "." + ext).concat(".pdf", "text/*", PDF_TYPE).join(",");

  class AttachmentError extends Error {}

  /* The block a file is to the model: "File: name", then its text fenced by more backticks than it holds. */
  function promptBlock({name, text}) {
    const longest = Math.max(0, ...(text.match(/`+/g) || []).map((run) => run.length));
    const fence = "`".repeat(Math.max(3, longest + 1));
    return `File: ${name}\n${fence}\n${text.replace(/\n$/, "")}\n${fence}`;
  }

  /* A user message's text as the model reads it: its attachments' blocks, then what the user wrote. */
  function promptText(message) {
    const blocks = (message.attachments || []).map(promptBlock);
    return blocks.concat(message.content ? [message.content] : []).join("\n\n");
  }

  const extension = (name) => (name.includes(".") ? name.split(".").pop().toLowerCase() : "");
  const isPdf = (file) => file.type === PDF_TYPE || extension(file.name) === "pdf";

  /* {name, type, text} of a picked or dropped File, or AttachmentError saying why it cannot be attached. */
  async function readFile(file) {
    const pdf = isPdf(file);
    if (!pdf && !TEXT_EXTENSIONS.includes(extension(file.name)) && !file.type.startsWith("text/")) {
      throw new AttachmentError(`${file.name}: only text files (.txt, .md, .csv, .json, source code) and PDFs ` +
                                "can be attached.");
    }
    const limit = pdf ? MAX_PDF_BYTES : MAX_TEXT_BYTES;
    if (file.size > limit) {  // from the File's size: nothing is read
      throw new AttachmentError(`${file.name} is ${formatBytes(file.size)}; attachments are limited to ` +
                                `${formatBytes(limit)} (${pdf ? "a PDF" : "a text file"}).`);
    }
    const bytes = await file.arrayBuffer();
    if (pdf) {
      const text = await Pychat.pdfText(bytes).catch((error) => {
        throw new AttachmentError(`${file.name} could not be read as a PDF: ${error.message}`);
      });
      if (!text) throw new AttachmentError(`${file.name} holds no text (a scanned PDF?): nothing to attach.`);
      return {name: file.name, type: PDF_TYPE, text};
    }
    try {
      return {name: file.name, type: file.type || "text/plain", text: new TextDecoder("utf-8", {fatal: true}).decode(bytes)};
    } catch (error) {
      throw new AttachmentError(`${file.name} is not UTF-8 text.`);
    }
  }

  /* One chip: the name, the token count (if known) and, for the message being written, a remove button. */
  function chip(attachment, onRemove) {
    const {element} = Pychat.PageUI;
    const box = element("span", undefined, "chip");
    box.title = attachment.name;
    box.append(element("span", attachment.name, "chip-name"),
               element("span", attachment.tokens == null ? "counting…" : `${attachment.tokens} tokens`, "chip-tokens"));
    if (onRemove) {
      const remove = element("button", "×", "chip-remove");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove ${attachment.name}`);
      remove.onclick = onRemove;
      box.appendChild(remove);
    }
    return box;
  }

  /* A sent message's attachments as chips in `parent`, before `before`. */
  function showChips(parent, attachments, before = null) {
    if (!attachments || !attachments.length) return;
    const row = Pychat.PageUI.element("div", undefined, "chips");
    row.append(...attachments.map((attachment) => chip(attachment)));
    parent.insertBefore(row, before);
  }

  class AttachmentTray {
    constructor({countTokens, onChange = () => {}}) {
      this.countTokens = countTokens;
      this.onChange = onChange;
      this.files = [];  // [{name, type, text, tokens}]: tokens null until counted
      this.chips = document.getElementById("attachments");
      this.status = document.getElementById("attachment-status");
    }

    wire() {
      const picker = document.getElementById("attach-file");
      picker.accept = ACCEPT;
      document.getElementById("attach").onclick = () => picker.click();
      picker.onchange = () => { this.add(picker.files); picker.value = ""; };
      const composer = document.getElementById("composer");
      composer.addEventListener("dragover", (e) => { e.preventDefault(); e.stopPropagation(); });
      composer.addEventListener("drop", (e) => {
        e.preventDefault();
        e.stopPropagation();  // an attachment, not a model: the page's own drop handler must not see it
        if (e.dataTransfer && e.dataTransfer.files.length) this.add(e.dataTransfer.files);
      });
      document.getElementById("input").addEventListener("paste", (e) => {
        const files = e.clipboardData ? e.clipboardData.files : [];
        if (!files.length) return;  // pasted text goes into the input as usual
        e.preventDefault();
        this.add(files);
      });
    }

    /* Read and attach `fileList`; a file that cannot be attached is left out and the message says why. */
    async add(fileList) {
      const problems = [];
      for (const file of Array.from(fileList)) {
        try {
          const attachment = {...await readFile(file), tokens: null};
          this.files.push(attachment);
          this.render();
          this.count(attachment);
        } catch (error) {
          if (!(error instanceof AttachmentError)) throw error;
          problems.push(error.message);
        }
      }
      this.say(problems.join(" "));
    }

    /* The attachment's tokens in the loaded model's vocabulary, as its block is sent (promptBlock). */
    async count(attachment) {
      try {
        attachment.tokens = await this.countTokens(promptBlock(attachment));
      } catch (error) {
        attachment.tokens = null;  // no model yet: counted again before sending
      }
      this.render();
      this.onChange();
    }

    remove(attachment) {
      this.files = this.files.filter((a) => a !== attachment);
      this.say("");
      this.render();
      this.onChange();
    }

    /* The attachments taken by a sent message (the tray is empty again), or put back after a failed turn. */
    take() {
      const files = this.files;
      this.files = [];
      this.render();
      return files;
    }

    restore(files) {
      this.files = files.concat(this.files);
      this.render();
      this.onChange();
    }

    render() {
      this.chips.replaceChildren(...this.files.map((a) => chip(a, () => this.remove(a))));
      this.chips.hidden = !this.files.length;
    }

    say(text) {
      this.status.textContent = text;
      this.status.hidden = !text;
    }

    /* Whether the user's `message` with the attachments fits the model's context with room for an answer, when
     * it is the only message (older ones are dropped first). budgetOf(messages): the worker's budget. */
    async fits(message, budgetOf) {
      await Promise.all(this.files.filter((a) => a.tokens == null).map((a) => this.count(a)));
      const names = this.files.map((a) => a.name).join(", ");
      let budget;
      try {
        budget = await budgetOf([message]);
      } catch (error) {
        this.say(`${names}: does not fit the model's context (${error.message}). Remove it to send the message.`);
        return false;
      }
      if (budget.used + budget.reserve <= budget.context) return true;
      this.say(`${names}: does not fit the model's context. The message would take ${budget.used} tokens and the ` +
               `answer needs ${budget.reserve} more; the context holds ${budget.context}. Remove it to send the message.`);
      return false;
    }
  }

  const Attachments = {promptText, promptBlock, showChips, readFile, MAX_TEXT_BYTES, MAX_PDF_BYTES};
  Object.assign(Pychat, {Attachments, AttachmentTray});
})(self.Pychat = self.Pychat || {});
