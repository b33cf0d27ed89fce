/*
 * conversation_export.js: saved conversations written out as a file, one or all of them, in three formats,
 * and the JSONL format read back in.
 *
 *     json       the backup: conversation_store.js's export (titles, system prompts, times, every version of
 *                every message), read back whole
 *     markdown   for reading: "# title", then "## System" / "## User" / "## Assistant" and each text
 *     jsonl      fine-tuning data: one conversation per line, {"messages": [{"role", "content"}, ...]}, the
 *                system prompt as a first "system" message. It is OpenAI's chat fine-tuning format, and what
 *                `pychat-wasm finetune --data` and the Train panel read (pychat_wasm/train/data.py). Only the
 *                conversations with an answer are written: one without teaches nothing, and finetune refuses it.
 *
 *     const file = Pychat.ConversationExport.exportFile(conversations, "jsonl", "all");
 *     // {name: "pychat-conversations-2026-12-07.jsonl", type, text, left: 1 (without an answer, left out)}
 *     Pychat.ConversationExport.parseJsonl('{"messages": [...]}\n...');  // conversations, or ConversationImportError
 *     await Pychat.ConversationExport.readImport(file);  // a .json backup or JSONL, its size checked before reading
 *     new Pychat.ConversationExporter({store, currentId: () => id, alertBox}).wire();  // the Export button
 *
 * Markdown and JSONL write a branched conversation's branch on screen (its `messages`, conversation_tree.js's
 * shown path): one version of each message, as it was read; the JSON backup keeps the others.
 *
 * A JSONL line is one conversation, not one message: a file of single messages would have no place where
 * one conversation ends and the next begins, and every fine-tuning reader (ours, OpenAI's) takes whole ones.
 */
(function (Pychat) {
  "use strict";

  const {ConversationStore} = Pychat;  // conversation_store.js
  const FORMATS = {
    json: {extension: "json", type: "application/json"},
    markdown: {extension: "md", type: "text/markdown"},
    jsonl: {extension: "jsonl", type: "application/jsonl"},
  };
  const HEADINGS = {system: "System", user: "User", assistant: "Assistant"};
  // Line breaks JSON leaves unescaped but Python's str.splitlines() (and so a JSONL reader built on it) splits at
  const LINE_BREAKS_IN_STRINGS = /[\u0085\u2028\u2029]/g;

  const oneLine = (text) => text.replace(/\s+/g, " ").trim();

  /* The conversation as OpenAI messages: the system prompt (if any) first, then role and content only. */
  function openAIMessages({system_prompt, messages}) {
    const plain = messages.map(({role, content}) => ({role, content}));
    return system_prompt ? [{role: "system", content: system_prompt}, ...plain] : plain;
  }

  /* "# Capitals\n\n## User\n\nCapital of France?\n\n## Assistant\n\nParis.\n"; conversations apart by "---". */
  function toMarkdown(conversations) {
    return conversations.map((conversation) => {
      const parts = [`# ${oneLine(conversation.title)}`];
      for (const {role, content} of openAIMessages(conversation)) parts.push(`## ${HEADINGS[role]}`, content);
      return parts.join("\n\n") + "\n";
    }).join("\n---\n\n");
  }

  /* {text: one {"messages": [...]} line per conversation that has an answer, left: how many had none}. */
  function toJsonl(conversations) {
    const answered = conversations.filter((c) => c.messages.some((m) => m.role === "assistant"));
    const lines = answered.map((c) => JSON.stringify({messages: openAIMessages(c)})
      .replace(LINE_BREAKS_IN_STRINGS, (ch) => "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0")));
    return {text: lines.map((line) => line + "\n").join(""), left: conversations.length - answered.length};
  }

  /* "pychat-capitals-of-europe" from a title; "pychat-conversation" when nothing of it is left. */
  function fileStem(title) {
    const slug = oneLine(title).toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-+|-+$/g, "").slice(0, 40);
    return "pychat-" + (slug.replace(/-+$/, "") || "conversation");
  }

  /* The file for `conversations` in `format` (json | markdown | jsonl); scope "one" names it after the first. */
  function exportFile(conversations, format, scope, now = new Date()) {
    const {extension, type} = FORMATS[format];
    const stem = scope === "one" && conversations.length ? fileStem(conversations[0].title)
      : `pychat-conversations-${now.toISOString().slice(0, 10)}`;
    const {text, left} = format === "jsonl" ? toJsonl(conversations)
      : {text: format === "json" ? ConversationStore.exportJSON(conversations) : toMarkdown(conversations), left: 0};
    return {name: `${stem}.${extension}`, type, text, left};
  }

  /* One JSONL line as a conversation (fresh id, title from its first message); `number` names it in errors. */
  function conversationFromLine(line, number) {
    const fail = (why) => { throw new ConversationStore.ConversationImportError(`Line ${number}: ${why}`); };
    let value;
    try {
      value = JSON.parse(line);
    } catch (error) {
      fail(`not JSON (${error.message})`);
    }
    if (!value || typeof value !== "object" || !Array.isArray(value.messages)) fail('not a {"messages": [...]} object');
    let system_prompt = "";
    const messages = [];
    value.messages.forEach((message, i) => {
      const {role, content} = message || {};
      if (typeof content !== "string") fail(`message ${i + 1} has no text content`);
      if (role === "system" && i === 0) system_prompt = content;
      else if (role === "user" || role === "assistant") messages.push({role, content});
      else fail(`message ${i + 1} has the role ${JSON.stringify(role)}: a conversation here is an optional first ` +
                `"system" message, then "user" and "assistant" messages`);
    });
    if (!messages.length) fail("no user or assistant message");
    return ConversationStore.create({system_prompt, messages});
  }

  /* Every conversation of a JSONL text, or a ConversationImportError naming the first bad line: all or none. */
  function parseJsonl(text) {
    const conversations = [];
    text.replace(/^\ufeff/, "").split("\n").forEach((line, i) => {
      if (line.trim()) conversations.push(conversationFromLine(line, i + 1));
    });
    if (!conversations.length) {
      throw new ConversationStore.ConversationImportError('The file holds no conversation: JSONL has one ' +
                                                         '{"messages": [...]} object per line.');
    }
    return conversations;
  }

  /* JSONL: named .jsonl, or two lines or more of which the first is a {"messages"} object on its own. */
  function isJsonl(name, text) {
    if (/\.jsonl$/i.test(name)) return true;
    const lines = text.split("\n").filter((line) => line.trim());
    if (lines.length < 2) return false;
    try {
      return Array.isArray(JSON.parse(lines[0]).messages);
    } catch (error) {
      return false;
    }
  }

  /* The conversations of an imported File, JSONL or a JSON backup; none is read past the size limit. */
  function readImport(file) {
    return ConversationStore.readImport(file, (text) => (isJsonl(file.name, text) ? parseJsonl(text)
                                                                                  : ConversationStore.parseImport(text)));
  }

  /* The Export button: the conversation in use or all of them (#export-scope), in #export-format, downloaded. */
  class ConversationExporter {
    constructor({store, currentId, alertBox}) {
      Object.assign(this, {store, currentId, alertBox});
    }

    wire() {
      document.getElementById("conversation-export").onclick = () => this.export();
    }

    async export() {
      const scope = document.getElementById("export-scope").value;
      const format = document.getElementById("export-format").value;
      const conversations = scope === "one" ? [await this.store.get(this.currentId())].filter(Boolean)
        : await this.store.list();
      if (!conversations.length) {
        this.alertBox("notice", `Nothing to export: ${scope === "one" ? "this conversation has no message yet"
                                                                      : "there is no saved conversation"}.`);
        return;
      }
      const file = exportFile(conversations, format, scope);
      const leftOut = file.left ? ` (${file.left} without an answer left out: fine-tuning data needs answers)` : "";
      if (!file.text) {
        this.alertBox("notice", `Nothing to export${leftOut}.`);
        return;
      }
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([file.text], {type: file.type}));
      link.download = file.name;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      if (leftOut) this.alertBox("notice", `Exported ${file.name}${leftOut}.`);
    }
  }

  Object.assign(Pychat, {ConversationExport: {exportFile, toMarkdown, toJsonl, parseJsonl, readImport},
                         ConversationExporter});
})(self.Pychat = self.Pychat || {});
