/*
 * chat.js: the conversation, owned by the page. Each turn sends the messages shown (conversation_tree.js's
 * shown path) to the Python workers as an OpenAI chat.completions request (chat_request.js), through
 * api_requests.js as web/pychat.js's engine sends its requests; Python answers it, reusing its KV cache for the
 * prefix it already holds (on another branch too: the messages before the fork), and keeps nothing else. An
 * answer that streamed (answer_stream.js) is kept (also when stopped, or cut short by a crash); a turn that
 * fails before its first piece leaves the conversation as it was and puts the message back in the input.
 *
 * Send (Enter), Stop (Escape), Regenerate the last answer, Edit a message of yours and send it again: both keep
 * the old version, and "‹ n / m ›" (transcript.js) switches versions, each with the continuation it had. The
 * system prompt, and the sampling settings and stop strings of sampling_form.js. The conversations themselves
 * are kept in IndexedDB (conversation_store.js) and listed by conversation_list.js. The context budget (tokens
 * used of the model's context, live while an answer streams) is shown under the messages; the messages the
 * last prompt left out are marked. Files attached to the message being written (attachments.js) are counted in
 * the budget before it is sent, and kept with the message.
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
  const Tree = Pychat.ConversationTree;  // conversation_tree.js

  class ChatController {
    constructor({models, setPhase, alertBox}) {
      this.models = models;
      this.setPhase = setPhase;
      this.alertBox = alertBox;
      this.view = new Pychat.ChatView(document.getElementById("messages"));
      this.transcript = new Pychat.Transcript(this.view, {onEdit: (view, node) => this.edit(view, node),
        onRegenerate: () => this.regenerate(), onSwitch: (index, id, step) => this.switchVersion(index, id, step)});
      this.meter = document.getElementById("context-budget");
      this.requests = new Pychat.ApiRequests(() => models.python);  // the pool in use: models.js restarts it
      this.aborter = null;         // stops the answer being written
      this.list = null;
      this.generating = false;
      this.turn = null;            // the answer being written, or the last one: settles when it ends
      this.conversations = null;   // the saved conversations (conversation_store.js)
      this.conversation = null;    // the one on the page: {id, title, system_prompt, nodes, messages, ...}
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
      this.transcript.render(conversation);
      this.meter.textContent = "";
      this.list.render(conversation.id);
      if (this.models.ready) this.showStoredBudget();
    }

    /* Show the version `id` of the message at `index`, with the continuation it was left with, and keep it as
     * the conversation's shown branch (saved, but not moved up the list: nothing new was said). */
    async switchVersion(index, id, step) {
      if (this.generating || id === null) return;
      this.conversation = Tree.select(this.conversation, id);
      this.transcript.render(this.conversation);
      const buttons = this.view.messages[index].versionButtons;  // the keyboard's focus stays on the arrows
      (buttons[step].disabled ? buttons[-step] : buttons[step]).focus();
      await this.save(this.conversation, {touch: false});
      if (this.models.idle()) this.showStoredBudget();
    }

    /* Saved with a fresh title (from the first message) and time, and first in the list, unless `touch` is
     * false (a switch of versions). */
    async save(conversation, {touch = true} = {}) {
      const stored = await this.conversations.get(conversation.id);  // renamed while the answer streamed?
      const named = stored && stored.titled ? {title: stored.title, titled: true} : {};
      const saved = touch ? Pychat.ConversationStore.touched({...conversation, ...named}) : {...conversation, ...named};
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

    /* The worker's budget of `messages` after the system prompt, before an answer (max_tokens: its room). */
    async budgetOf(messages) {
      const {messages: sent, max_tokens} = Pychat.ChatRequest.body(this.form, {...this.conversation, messages});
      return (await this.models.python.request("budget", {body: {messages: sent, max_tokens}})).budget;
    }

    // ---- turns ---------------------------------------------------------------------------------------------

    /* The message in the input, with the attachments (refused, and kept, when they cannot fit the context),
     * after the messages shown. */
    async send() {
      const text = this.$("input").value.trim();
      const attached = this.attachments.files;
      if ((!text && !attached.length) || !this.models.idle()) return null;
      const message = {role: "user", content: text, ...(attached.length ? {attachments: attached} : {})};
      const fits = !attached.length || await this.attachments.fits(message, (messages) => this.budgetOf(messages));
      if (!fits) return null;  // the attachments' message says why; the text and the files stay
      this.$("input").value = "";
      this.attachments.take();
      const shown = Tree.shownPath(this.conversation);
      const {conversation, id} = Tree.add(this.conversation, shown.length ? shown[shown.length - 1].id : null, message);
      const saved = await this.runTurn(conversation, id, {unsent: text});
      if (!saved && attached.length) this.attachments.restore(attached);  // failed before its first piece: kept
      return saved;
    }

    /* Another answer to the last question, kept as a new version beside the old one (its prompt is all in the
     * KV cache). */
    regenerate() {
      const shown = Tree.shownPath(this.conversation);
      if (!this.models.idle() || !shown.length) return null;
      const last = shown[shown.length - 1];
      return this.runTurn(this.conversation, last.role === "assistant" ? last.parent : last.id);
    }

    /* The user's message `node` becomes an editor; Send adds the text as its new version and answers it. */
    edit(view, node) {
      if (this.generating) return;
      view.editText((text) => {
        if (!this.models.idle() || !text.trim()) return false;
        const edited = {...Tree.messageFields(node), content: text.trim()};  // its attachments stay
        const {conversation, id} = Tree.add(this.conversation, node.parent, edited);
        this.runTurn(conversation, id);
        return true;
      });
    }

    /* Answer the node `parent` of `conversation` (a question new, edited or asked again) with a new child: the
     * messages up to it shown at once, the answer saved once it has streamed (this.conversation stays as it
     * was until then, and after a turn that fails before its first piece). */
    runTurn(conversation, parent, {unsent = null} = {}) {
      const before = this.conversation;
      let constraints;
      try {
        constraints = Pychat.ChatRequest.constraints(this.form);
      } catch (error) {  // a schema or tools that are no JSON: nothing sent, nothing changed
        this.alertBox("error", error.message);
        if (unsent !== null && !this.$("input").value) this.$("input").value = unsent;
        return Promise.resolve(null);
      }
      const messages = Tree.pathTo(conversation, parent), shown = Tree.shownPath(before);
      if (messages.length === shown.length + 1 && shown.every((node, i) => messages[i].id === node.id)) {
        this.transcript.add(messages[messages.length - 1]);  // a new message: the rest stays as shown
      } else {  // regenerate, or edit and send: from there on it changes
        this.transcript.render(conversation, messages);
      }
      this.transcript.offerRegenerate(null);
      const answer = this.view.add("assistant", "");
      const stream = new Pychat.AnswerStream(answer, {onBudget: (budget) => this.showBudget(budget),
                                                      onText: () => this.view.scroll()});
      this.generating = true;
      this.setPhase("generating", "Writing…");
      const aborter = this.aborter = new AbortController();
      let outOfMemory = false;
      const body = {...Pychat.ChatRequest.body(this.form, {...conversation, messages}), ...constraints};
      this.turn = this.requests.request("chat.completions", body, {signal: aborter.signal})
        .then(async (chunks) => {
          for await (const chunk of chunks) stream.add(chunk);
        })
        .catch((error) => {
          if (error.name === "AbortError" && aborter.signal.aborted) return;  // Stop: the answer as it streamed
          answer.setNote(`Stopped by an error: ${error.message}`);
          outOfMemory = WorkerError.is(error, "MemoryError");  // the wasm heap never shrinks: only a fresh worker gets it back
          if (outOfMemory) {
            this.alertBox("error", `${error.message} Python is restarted with fresh memory; your conversation is kept.`);
          } else if (!WorkerError.is(error, "WorkerCrashed")) {  // a crash: models.js restarts the worker and says so
            this.alertBox("error", error.message);
          }
        })
        .then(() => {
          const reply = stream.reply(before.dropped);
          if (!reply) {  // failed before its first piece: as it was, the message back in the input
            if (unsent !== null && !this.$("input").value) this.$("input").value = unsent;
            if (this.conversation.id === before.id) this.transcript.render(this.conversation);
            return;
          }
          const {conversation: answered, id} = Tree.add(conversation, parent, reply);
          if (this.conversation.id === conversation.id) {
            this.transcript.showVersions(answer, answered, id, messages.length);
            this.transcript.offerRegenerate(answer);
          }
          return this.save(answered);
        })
        .finally(() => {
          this.generating = false;
          this.aborter = null;
          if (outOfMemory) this.models.restart();  // the new worker gets the whole conversation
          else if (this.models.ready) this.models.showReady();
        });
      return this.turn;
    }

    /* The worker ends the answer after the current token. */
    stop() {
      if (!this.generating) return;
      this.aborter.abort();
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

  Object.assign(Pychat, {ChatController});
})(self.Pychat = self.Pychat || {});
