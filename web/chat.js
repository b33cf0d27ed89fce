/*
 * chat.js: the conversation. Send (Enter), the answer streamed into the message list, Stop, New chat,
 * Clear, the system prompt and the sampling settings; the conversation and the settings are kept in
 * localStorage, so a reload (also offline) shows and continues the same chat.
 *
 *     const chat = new ChatController(app);   // app: {state, setPhase, showReady, alertBox, restartPython}
 *     chat.restore(manifest.sampling_defaults);
 *     chat.wire();
 */
"use strict";

const SAVED_CONVERSATION = "pychat.conversation";
const SAVED_SETTINGS = "pychat.settings";

class ChatController {
  constructor(app) {
    this.app = app;
    this.state = app.state;
    this.view = new ChatView(document.getElementById("messages"));
  }

  $(id) {
    return document.getElementById(id);
  }

  /* Settings (saved ones over the engine's defaults) and the saved conversation, back on the page. */
  restore(defaults) {
    this.defaults = defaults;
    this.fillSettings({...defaults, ...PageUI.loadSaved(SAVED_SETTINGS, {})});
    this.state.conversation = PageUI.loadSaved(SAVED_CONVERSATION, {system_prompt: "", messages: []});
    this.$("system-prompt").value = this.state.conversation.system_prompt || "";
    for (const message of this.state.conversation.messages) this.view.add(message.role, message.content);
  }

  wire() {
    this.$("composer").onsubmit = (e) => { e.preventDefault(); this.send(); };
    this.$("input").onkeydown = (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.send(); }
    };
    this.$("stop").onclick = () => this.stop();
    this.$("new-chat").onclick = () => this.newChat();
    this.$("clear").onclick = () => { localStorage.removeItem(SAVED_CONVERSATION); this.newChat(); };
    this.$("system-prompt").onchange = () => this.newChat();
    this.$("settings").oninput = () => PageUI.save(SAVED_SETTINGS, this.readSettings());
    this.$("settings-reset").onclick = () => {
      this.fillSettings(this.defaults);
      PageUI.save(SAVED_SETTINGS, this.readSettings());
    };
  }

  /* The inputs of the sampling form; each one's name is the engine's setting name (top_k, seed, ...). */
  settingInputs() {
    return this.$("settings").querySelectorAll("input[name]");
  }

  /* The form as numbers; an empty field is null (the engine's default, or a random seed). */
  readSettings() {
    const settings = {};
    for (const input of this.settingInputs()) {
      const value = input.value.trim();
      settings[input.name] = value === "" ? null : Number(value);
    }
    return settings;
  }

  fillSettings(values) {
    for (const input of this.settingInputs()) {
      input.value = values[input.name] === null || values[input.name] === undefined ? "" : values[input.name];
    }
  }

  saveConversation() {
    PageUI.save(SAVED_CONVERSATION, this.state.conversation);
  }

  send() {
    const state = this.state;
    const text = this.$("input").value.trim();
    if (!text || !state.ready || state.generating) return null;
    this.$("input").value = "";
    state.conversation.messages.push({role: "user", content: text});
    this.saveConversation();
    this.view.add("user", text);
    const answer = this.view.add("assistant", "");
    state.generating = true;
    this.app.setPhase("generating", "Writing…");
    const started = performance.now();
    let firstToken = null;
    const onEvent = (event) => {
      if (event.kind === "piece") {
        if (firstToken === null) firstToken = (performance.now() - started) / 1000;
        answer.append(event.text);
        this.view.scroll();
      } else if (event.kind === "progress") {
        answer.setNote(`Reading the prompt: ${event.progress[0]} / ${event.progress[1]} tokens`);
      } else if (event.kind === "notice") {
        answer.addNotice(event.text);
      } else if (event.kind === "done") {
        answer.setStats(event.stats, firstToken);
      }
    };
    let outOfMemory = false;
    state.turn = state.python.request("chat", {text, settings: this.readSettings()}, {onEvent})
      .catch((error) => {
        answer.setNote(`Stopped by an error: ${error.message}`);
        if (error.type === "WorkerCrashed") return null;  // app.js restarts the worker
        if (error.type === "MemoryError") {  // the wasm heap never shrinks: only a fresh worker gets it back
          outOfMemory = true;
          this.app.alertBox("error", `${error.message} Python is restarted with fresh memory; your conversation is kept.`);
          return null;
        }
        this.app.alertBox("error", error.message);
        return state.python.request("conversation", {conversation: state.conversation});  // back in step
      })
      .finally(() => {
        state.conversation.messages.push({role: "assistant", content: answer.text});  // the answer so far
        this.saveConversation();
        state.generating = false;
        if (outOfMemory) this.app.restartPython(state.model);  // the new worker gets the whole conversation
        else if (state.ready) this.app.showReady();
      });
    return state.turn;
  }

  /* The worker ends the answer after the current token (or prompt chunk). */
  stop() {
    if (!this.state.generating) return;
    this.state.python.stop();
    this.app.setPhase("stopping", "Stopping…");
  }

  async newChat() {
    const state = this.state;
    if (state.generating) {
      this.stop();
      await state.turn;
    }
    state.conversation = {system_prompt: this.$("system-prompt").value, messages: []};
    this.saveConversation();
    this.view.clear();
    if (state.ready) await state.python.request("conversation", {conversation: state.conversation});
  }
}

self.ChatController = ChatController;
