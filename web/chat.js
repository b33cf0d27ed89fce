/*
 * chat.js: the conversation, owned by the page. Each turn sends it whole (system prompt, messages, settings,
 * stop strings) to the Python worker, which answers it, reusing its KV cache for the prefix it already holds,
 * and keeps nothing else. An answer that streamed is kept (also when stopped, or cut short by a crash); a turn
 * that fails before its first piece leaves the conversation as it was and puts the message back in the input.
 *
 * Send (Enter), Stop (Escape), Regenerate the last answer, Edit a message of yours and send it again (the
 * messages after it are replaced), the system prompt, and the sampling settings and stop strings of
 * sampling_form.js. The conversations themselves are kept in IndexedDB (conversation_store.js) and listed by
 * conversation_list.js. The context budget (tokens used of the model's context, live while an answer streams)
 * is shown under the messages; the messages the last prompt left out are marked. Files attached to the message
 * being written (attachments.js) are counted in the budget before it is sent, and kept with the message; the
 * model reads every message as modelMessages() makes it (attachments in, past reasoning out).
 *
 * It owns the answer being written (`generating`, `turn`: a promise that settles when it ends) and the
 * conversation on the page (`conversation`, `conversations`: the store); others read them, only it writes.
 *
 *     const chat = new Pychat.ChatController({models, setPhase, alertBox});  // models: models.js's controller
 *     await chat.restore(manifest);   // sampling_defaults, settings_rules: the sampling form's
 *     chat.wire();
 */
(function (Pychat) {
  "use strict";

  const {WorkerError} = Pychat;  // worker_error.js

  class ChatController {
    constructor({models, setPhase, alertBox}) {
      this.models = models;
      this.setPhase = setPhase;
      this.alertBox = alertBox;
      this.view = new Pychat.ChatView(document.getElementById("messages"));
      this.meter = document.getElementById("context-budget");
      this.list = null;
      this.generating = false;
      this.turn = null;            // the answer being written, or the last one: settles when it ends
      this.conversations = null;   // the saved conversations (conversation_store.js)
      this.conversation = null;    // the one on the page: {id, title, system_prompt, messages, ...}
      this.attachments = new Pychat.AttachmentTray({
        countTokens: async (text) => (await this.models.python.request("countTokens", {text})).tokens,
        onChange: () => { if (this.models.idle()) this.showStoredBudget(); },
      });
    }

    $(id) {
      return document.getElementById(id);
    }

    /* The sampling form (sampling_form.js), then the conversation in use on the last visit. */
    async restore(manifest) {
      this.form = new Pychat.SamplingForm(manifest);
      const store = this.conversations = await Pychat.ConversationStore.open();
      this.list = new Pychat.ConversationList({store, onOpen: (id) => this.open(id),
                                               beforeDelete: (id) => this.leave(id), alertBox: this.alertBox});
      this.show((await store.current()) || Pychat.ConversationStore.create());
    }

    wire() {
      this.$("composer").onsubmit = (e) => { e.preventDefault(); this.send(); };
      this.$("input").onkeydown = (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.send(); }
      };
      document.addEventListener("keydown", (e) => { if (e.key === "Escape" && this.generating) this.stop(); });
      this.$("stop").onclick = () => this.stop();
      this.$("new-chat").onclick = () => this.newChat();
      this.$("composer-new-chat").onclick = () => this.newChat();
      this.$("system-prompt").onchange = () => this.changeSystemPrompt();
      this.form.wire();
      this.list.wire();
      this.attachments.wire();
    }

    // ---- the conversation on the page ------------------------------------------------------------------------

    /* Put `conversation` on the page as the one in use. */
    show(conversation) {
      this.conversation = conversation;
      this.conversations.keepCurrent(conversation);
      this.$("system-prompt").value = conversation.system_prompt || "";
      this.renderMessages(conversation.messages);
      this.view.markDropped(conversation.dropped || 0);  // as the last answer's prompt left them out
      this.meter.textContent = "";
      this.list.render(conversation.id);
      if (this.models.ready) this.showStoredBudget();
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
      Pychat.Attachments.showChips(view.root, message.attachments, view.content);
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
      const stored = await this.conversations.get(conversation.id);  // renamed while the answer streamed?
      const named = stored && stored.titled ? {title: stored.title, titled: true} : {};
      const saved = Pychat.ConversationStore.touched({...conversation, ...named});
      if (this.conversation.id === saved.id) {
        this.conversation = saved;
        this.conversations.keepCurrent(saved);
      }
      await this.conversations.put(saved);
      this.list.render(this.conversation.id);
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

    /* The budget of the conversation in use as it stands (after a model load, a switch), with the files attached
     * to the next message. */
    async showStoredBudget() {
      const attached = this.attachments.files;
      const draft = attached.length ? [{role: "user", content: "", attachments: attached}] : [];
      try {
        this.showBudget(await this.budgetOf(this.conversation.messages.concat(draft)));
      } catch (error) {
        this.meter.textContent = `Context: ${error.message}`;
      }
    }

    /* The worker's budget of `messages` after the system prompt, before an answer. */
    async budgetOf(messages) {
      const conversation = {system_prompt: this.conversation.system_prompt || "", messages: modelMessages(messages),
                            settings: this.form.settings()};  // max_tokens: the answer's room
      return (await this.models.python.request("budget", {conversation})).budget;
    }

    // ---- turns ---------------------------------------------------------------------------------------------

    /* The message in the input, with the attachments (refused, and kept, when they cannot fit the context). */
    async send() {
      const text = this.$("input").value.trim();
      const attached = this.attachments.files;
      if ((!text && !attached.length) || !this.models.idle()) return null;
      const message = {role: "user", content: text, ...(attached.length ? {attachments: attached} : {})};
      const fits = !attached.length || await this.attachments.fits(message, (messages) => this.budgetOf(messages));
      if (!fits) return null;  // the attachments' message says why; the text and the files stay
      this.$("input").value = "";
      this.attachments.take();
      const saved = await this.runTurn(this.conversation.messages.concat(message), {unsent: text});
      if (!saved && attached.length) this.attachments.restore(attached);  // failed before its first piece: kept
      return saved;
    }

    /* The last answer again, for the same conversation (its prompt is all in the KV cache). */
    regenerate() {
      const messages = this.conversation.messages;
      if (!this.models.idle() || !messages.length) return null;
      return this.runTurn(messages.slice(0, messages[messages.length - 1].role === "assistant" ? -1 : undefined));
    }

    /* The user's message at `index` becomes an editor; Send replaces it and everything after it. */
    edit(view, index) {
      if (this.generating) return;
      view.editText((text) => {
        if (!this.models.idle() || !text.trim()) return false;
        const messages = this.conversation.messages.slice(0, index)
          .concat({...this.conversation.messages[index], content: text.trim()});  // its attachments stay
        this.runTurn(messages);
        return true;
      });
    }

    /* Answer `messages` (ending with the user's): shown at once, saved once the answer has streamed. */
    runTurn(messages, {unsent = null} = {}) {
      const conversation = this.conversation;
      if (messages.length === conversation.messages.length + 1) {  // a new message: the rest stays as shown
        this.addMessage(messages[messages.length - 1], messages.length - 1);
      } else {  // regenerate, or edit and send: from there on it changes
        this.renderMessages(messages);
      }
      this.offerRegenerate(null);
      const answer = this.view.add("assistant", "");
      this.generating = true;
      this.setPhase("generating", "Writing…");
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
      const turn = {system_prompt: conversation.system_prompt || "", messages: modelMessages(messages),
                    settings: this.form.settings(), stop: this.form.stops()};
      let outOfMemory = false;
      this.turn = this.models.python.request("chat", {turn}, {onEvent})
        .catch((error) => {
          answer.setNote(`Stopped by an error: ${error.message}`);
          outOfMemory = WorkerError.is(error, "MemoryError");  // the wasm heap never shrinks: only a fresh worker gets it back
          if (outOfMemory) {
            this.alertBox("error", `${error.message} Python is restarted with fresh memory; your conversation is kept.`);
          } else if (!WorkerError.is(error, "WorkerCrashed")) {  // a crash: models.js restarts the worker and says so
            this.alertBox("error", error.message);
          }
        })
        .then(() => {
          const text = done ? done.text : answer.text;
          if (!done && !text) {  // failed before its first piece: as it was, the message back in the input
            if (unsent !== null && !this.$("input").value) this.$("input").value = unsent;
            if (this.conversation.id === conversation.id) this.renderMessages(conversation.messages);
            return;
          }
          const reply = {role: "assistant", content: text, stats: done && done.stats, first_token: firstToken};
          if (this.conversation.id === conversation.id) this.offerRegenerate(answer);
          const dropped = done ? done.budget.dropped : conversation.dropped || 0;  // marked again after a reload
          return this.save({...conversation, messages: messages.concat(reply), dropped});
        })
        .finally(() => {
          this.generating = false;
          if (outOfMemory) this.models.restart();  // the new worker gets the whole conversation
          else if (this.models.ready) this.models.showReady();
        });
      return this.turn;
    }

    /* The worker ends the answer after the current token (or prompt chunk). */
    stop() {
      if (!this.generating) return;
      this.models.python.stop();
      this.setPhase("stopping", "Stopping…");
    }

    /* Let the running answer end (stopped) before the conversation on the page changes. */
    async settle() {
      if (!this.generating) return;
      this.stop();
      await this.turn;
    }

    // ---- the list of conversations --------------------------------------------------------------------------

    async newChat() {
      await this.settle();
      this.show(Pychat.ConversationStore.create({system_prompt: this.$("system-prompt").value}));
    }

    async open(id) {
      await this.settle();
      const conversation = await this.conversations.get(id);
      if (conversation) this.show(conversation);
    }

    /* The conversation `id` is about to be deleted: a running answer in it ends (and is saved) first, and the
     * newest other conversation, or a new one, takes its place on the page. */
    async leave(id) {
      if (this.conversation.id === id) {
        await this.settle();
        const others = (await this.conversations.list()).filter((c) => c.id !== id);
        this.show(others[0] || Pychat.ConversationStore.create());
      }
    }

    /* A new system prompt applies from the next answer on: the conversation keeps its messages. */
    async changeSystemPrompt() {
      const conversation = {...this.conversation, system_prompt: this.$("system-prompt").value};
      this.conversation = conversation;
      if (conversation.messages.length) await this.save(conversation);
      if (this.models.idle()) this.showStoredBudget();
    }
  }

  /* The messages as the model reads them: a user's with its attachments (attachments.js), a past answer without
   * its reasoning (reasoning.js); docs/chat.md says why. */
  function modelMessages(messages) {
    return messages.map((m) => ({role: m.role, content: m.role === "user" ? Pychat.Attachments.promptText(m)
                                                                         : Pychat.Reasoning.answerOnly(m.content)}));
  }

  Object.assign(Pychat, {ChatController});
})(self.Pychat = self.Pychat || {});
