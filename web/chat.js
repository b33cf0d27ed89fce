/*
 * chat.js: the conversation, owned by the page. Each turn sends it whole (system prompt, messages, settings,
 * stop strings) to the Python worker, which answers it, reusing its KV cache for the prefix it already holds,
 * and keeps nothing else. An answer that streamed is kept (also when stopped, or cut short by a crash); a turn
 * that fails before its first piece leaves the conversation as it was and puts the message back in the input.
 *
 * Send (Enter), Stop (Escape), Regenerate the last answer, Edit a message of yours and send it again (the
 * messages after it are replaced), the system prompt, the sampling settings and stop strings (saved in
 * localStorage). The conversations themselves are kept in IndexedDB (conversation_store.js) and listed by
 * conversation_list.js. The context budget (tokens used of the model's context, live while an answer streams)
 * is shown under the messages; the messages the last prompt left out are marked.
 *
 *     const chat = new Pychat.ChatController(app);   // app: {state, setPhase, showReady, alertBox, restartPython}
 *     await chat.restore(manifest.sampling_defaults);
 *     chat.wire();
 */
(function (Pychat) {
  "use strict";

  const SAVED_SETTINGS = "pychat.settings";
  const SAVED_CURRENT = "pychat.current-conversation";  // the conversation in use (once it has messages), also in
                                                        // localStorage: an eviction of IndexedDB leaves it
  const OLD_SAVED_CONVERSATION = "pychat.conversation";  // before conversations had a list: imported once

  class ChatController {
    constructor(app) {
      this.app = app;
      this.state = app.state;
      this.view = new Pychat.ChatView(document.getElementById("messages"));
      this.meter = document.getElementById("context-budget");
      this.list = null;
    }

    $(id) {
      return document.getElementById(id);
    }

    /* Settings (saved ones over the engine's defaults), then the conversation in use on the last visit. */
    async restore(defaults) {
      this.defaults = defaults;
      const saved = Pychat.PageUI.loadSaved(SAVED_SETTINGS, {});
      this.fillSettings({...defaults, ...saved});
      this.$("stop-strings").value = (saved.stop || []).join("\n");
      const store = this.state.conversations = await Pychat.ConversationStore.open();
      const old = Pychat.PageUI.loadSaved(OLD_SAVED_CONVERSATION, null);
      if (old && Array.isArray(old.messages) && old.messages.length) {
        const [imported] = Pychat.ConversationStore.parseImport(JSON.stringify(old));
        Pychat.PageUI.save(SAVED_CURRENT, imported);
      }
      localStorage.removeItem(OLD_SAVED_CONVERSATION);
      const copy = Pychat.PageUI.loadSaved(SAVED_CURRENT, null);
      if (copy && copy.id && !(await store.get(copy.id))) await store.put(copy);  // new, or the store was cleared
      this.list = new Pychat.ConversationList({store, onOpen: (id) => this.open(id),
                                               beforeDelete: (id) => this.leave(id), alertBox: this.app.alertBox});
      const current = (copy && await store.get(copy.id)) || (await store.list())[0];
      this.show(current || Pychat.ConversationStore.create());
    }

    wire() {
      this.$("composer").onsubmit = (e) => { e.preventDefault(); this.send(); };
      this.$("input").onkeydown = (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.send(); }
      };
      document.addEventListener("keydown", (e) => { if (e.key === "Escape" && this.state.generating) this.stop(); });
      this.$("stop").onclick = () => this.stop();
      this.$("new-chat").onclick = () => this.newChat();
      this.$("composer-new-chat").onclick = () => this.newChat();
      this.$("system-prompt").onchange = () => this.changeSystemPrompt();
      const saveSettings = () => Pychat.PageUI.save(SAVED_SETTINGS, {...this.readSettings(), stop: this.readStops()});
      this.$("settings").oninput = saveSettings;
      this.$("stop-strings").oninput = saveSettings;
      this.$("settings-reset").onclick = () => {
        this.fillSettings(this.defaults);
        this.$("stop-strings").value = "";
        saveSettings();
      };
      this.list.wire();
    }

    /* The inputs of the sampling form; each one's name is the engine's setting name (top_k, seed, ...). */
    settingInputs() {
      return this.$("settings").querySelectorAll("input[name]");
    }

    /* The form as numbers; an empty field is null (the engine's default, or a random seed). Python checks
     * them (the same check as the CLI's) and says what is wrong. */
    readSettings() {
      const settings = {};
      for (const input of this.settingInputs()) {
        const value = input.value.trim();
        settings[input.name] = value === "" ? null : Number(value);
      }
      return settings;
    }

    /* One stop string a line, as typed (a stop string may begin or end with spaces). */
    readStops() {
      return this.$("stop-strings").value.split("\n").filter((line) => line !== "");
    }

    fillSettings(values) {
      for (const input of this.settingInputs()) {
        input.value = values[input.name] === null || values[input.name] === undefined ? "" : values[input.name];
      }
    }

    // ---- the conversation on the page ------------------------------------------------------------------------

    /* Put `conversation` on the page as the one in use. */
    show(conversation) {
      this.state.conversation = conversation;
      if (conversation.messages.length) Pychat.PageUI.save(SAVED_CURRENT, conversation);
      this.$("system-prompt").value = conversation.system_prompt || "";
      this.renderMessages(conversation.messages);
      this.view.markDropped(conversation.dropped || 0);  // as the last answer's prompt left them out
      this.meter.textContent = "";
      this.list.render(conversation.id);
      if (this.state.ready) this.showStoredBudget();
    }

    /* The transcript of `messages`, with Edit on the user's messages and Regenerate on the last answer. */
    renderMessages(messages) {
      this.view.clear();
      messages.forEach((message, index) => {
        const view = this.addMessage(message, index);
        if (message.stats) view.setStats(message.stats, message.first_token);
      });
      const last = this.view.messages[messages.length - 1];
      if (last && messages[messages.length - 1].role === "assistant") this.offerRegenerate(last);
    }

    addMessage(message, index) {
      const view = this.view.add(message.role, message.content);
      if (message.role === "user") view.addAction("Edit", () => this.edit(view, index));
      return view;
    }

    /* Regenerate goes with the last answer only. */
    offerRegenerate(view) {
      if (this.regenerateButton) this.regenerateButton.remove();
      this.regenerateButton = view ? view.addAction("Regenerate", () => this.regenerate()) : null;
    }

    /* Saved with a fresh title (from the first message) and time; the list shows it first. */
    async save(conversation) {
      const stored = await this.state.conversations.get(conversation.id);  // renamed while the answer streamed?
      const named = stored && stored.titled ? {title: stored.title, titled: true} : {};
      const saved = Pychat.ConversationStore.touched({...conversation, ...named});
      if (this.state.conversation.id === saved.id) {
        this.state.conversation = saved;
        Pychat.PageUI.save(SAVED_CURRENT, saved);
      }
      await this.state.conversations.put(saved);
      this.list.render(this.state.conversation.id);
      return saved;
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

    /* The budget of the conversation in use as it stands (after a model load, a switch). */
    async showStoredBudget() {
      const {system_prompt, messages} = this.state.conversation;
      try {
        const conversation = {system_prompt, messages, settings: this.readSettings()};  // max_tokens: the answer's room
        const reply = await this.state.python.request("budget", {conversation});
        this.showBudget(reply.budget);
      } catch (error) {
        this.meter.textContent = `Context: ${error.message}`;
      }
    }

    // ---- turns ---------------------------------------------------------------------------------------------

    send() {
      const text = this.$("input").value.trim();
      if (!text || !this.state.ready || this.state.generating) return null;
      this.$("input").value = "";
      const messages = this.state.conversation.messages.concat({role: "user", content: text});
      return this.runTurn(messages, {unsent: text});
    }

    /* The last answer again, for the same conversation (its prompt is all in the KV cache). */
    regenerate() {
      const messages = this.state.conversation.messages;
      if (!this.state.ready || this.state.generating || !messages.length) return null;
      return this.runTurn(messages.slice(0, messages[messages.length - 1].role === "assistant" ? -1 : undefined));
    }

    /* The user's message at `index` becomes an editor; Send replaces it and everything after it. */
    edit(view, index) {
      if (this.state.generating) return;
      view.editText((text) => {
        if (!this.state.ready || this.state.generating || !text.trim()) return false;
        const messages = this.state.conversation.messages.slice(0, index).concat({role: "user", content: text.trim()});
        this.runTurn(messages);
        return true;
      });
    }

    /* Answer `messages` (ending with the user's): shown at once, saved once the answer has streamed. */
    runTurn(messages, {unsent = null} = {}) {
      const state = this.state;
      const conversation = state.conversation;
      if (messages.length === conversation.messages.length + 1) {  // a new message: the rest stays as shown
        this.addMessage(messages[messages.length - 1], messages.length - 1);
      } else {  // regenerate, or edit and send: from there on it changes
        this.renderMessages(messages);
      }
      this.offerRegenerate(null);
      const answer = this.view.add("assistant", "");
      state.generating = true;
      this.app.setPhase("generating", "Writing…");
      const started = performance.now();
      let firstToken = null;
      let done = null;
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
          done = event;
          answer.setStats(event.stats, firstToken);
        }
        this.showBudget(event.budget);
      };
      const turn = {system_prompt: conversation.system_prompt || "", messages, settings: this.readSettings(),
                    stop: this.readStops()};
      let outOfMemory = false;
      state.turn = state.python.request("chat", {turn}, {onEvent})
        .catch((error) => {
          answer.setNote(`Stopped by an error: ${error.message}`);
          outOfMemory = error.type === "MemoryError";  // the wasm heap never shrinks: only a fresh worker gets it back
          if (outOfMemory) {
            this.app.alertBox("error", `${error.message} Python is restarted with fresh memory; your conversation is kept.`);
          } else if (error.type !== "WorkerCrashed") {  // a crash: app.js restarts the worker and says so
            this.app.alertBox("error", error.message);
          }
        })
        .then(() => {
          const text = done ? done.text : answer.text;
          if (!done && !text) {  // failed before its first piece: as it was, the message back in the input
            if (unsent !== null && !this.$("input").value) this.$("input").value = unsent;
            if (state.conversation.id === conversation.id) this.renderMessages(conversation.messages);
            return;
          }
          const reply = {role: "assistant", content: text, stats: done && done.stats, first_token: firstToken};
          if (state.conversation.id === conversation.id) this.offerRegenerate(answer);
          const dropped = done ? done.budget.dropped : conversation.dropped || 0;  // marked again after a reload
          return this.save({...conversation, messages: messages.concat(reply), dropped});
        })
        .finally(() => {
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

    /* Let the running answer end (stopped) before the conversation on the page changes. */
    async settle() {
      if (!this.state.generating) return;
      this.stop();
      await this.state.turn;
    }

    // ---- the list of conversations --------------------------------------------------------------------------

    async newChat() {
      await this.settle();
      this.show(Pychat.ConversationStore.create({system_prompt: this.$("system-prompt").value}));
    }

    async open(id) {
      await this.settle();
      const conversation = await this.state.conversations.get(id);
      if (conversation) this.show(conversation);
    }

    /* The conversation `id` is about to be deleted: a running answer in it ends (and is saved) first, and the
     * newest other conversation, or a new one, takes its place on the page. */
    async leave(id) {
      if (this.state.conversation.id === id) {
        await this.settle();
        const others = (await this.state.conversations.list()).filter((c) => c.id !== id);
        this.show(others[0] || Pychat.ConversationStore.create());
      }
      if (Pychat.PageUI.loadSaved(SAVED_CURRENT, {}).id === id) localStorage.removeItem(SAVED_CURRENT);
    }

    /* A new system prompt applies from the next answer on: the conversation keeps its messages. */
    async changeSystemPrompt() {
      const conversation = {...this.state.conversation, system_prompt: this.$("system-prompt").value};
      this.state.conversation = conversation;
      if (conversation.messages.length) await this.save(conversation);
      if (this.state.ready && !this.state.generating) this.showStoredBudget();
    }
  }

  Object.assign(Pychat, {ChatController});
})(self.Pychat = self.Pychat || {});
