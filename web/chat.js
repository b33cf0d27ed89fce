/*
 * chat.js: the conversation. Send (Enter), the answer streamed into the message list, Stop, New chat,
 * Clear, the system prompt and the sampling settings; the conversation and the settings are kept in
 * localStorage, so a reload (also offline) shows and continues the same chat. The context budget (tokens
 * used of the model's context, live while an answer streams) is shown under the messages, with a warning
 * before the oldest turns get dropped; the messages the engine dropped are marked in the transcript.
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
    this.meter = document.getElementById("context-budget");
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

  /* "Context: 52 / 96 tokens (system 20 · history 28 · answer 4)", a warning, and the dropped-message marks. */
  showBudget(budget) {
    if (!budget) return;
    const parts = `system ${budget.system} · history ${budget.history} · answer ${budget.answer}`;
    let text = `Context: ${budget.used} / ${budget.context} tokens (${parts})`;
    if (budget.will_drop_next) text += ". The oldest turns will be dropped at the next message.";
    this.meter.textContent = text;
    this.meter.dataset.warning = String(budget.will_drop_next);
    this.view.markDropped(budget.dropped);
  }

  /* Hand the conversation to the worker (the session starts over with it) and show its budget. */
  async syncConversation() {
    const reply = await this.state.python.request("conversation", {conversation: this.state.conversation});
    this.showBudget(reply.budget);
    return reply;
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
        this.showBudget(event.budget);
      } else if (event.kind === "progress") {
        answer.setNote(`Reading the prompt: ${event.progress[0]} / ${event.progress[1]} tokens`);
        this.showBudget(event.budget);
      } else if (event.kind === "notice") {
        answer.addNotice(event.text);
      } else if (event.kind === "done") {
        answer.setStats(event.stats, firstToken);
        this.showBudget(event.budget);
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
        return this.syncConversation();  // back in step
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
    if (state.ready) await this.syncConversation();
  }
}

self.ChatController = ChatController;
