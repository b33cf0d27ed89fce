/*
 * chat.js: the conversation, owned by the page. Each turn sends it whole to the Python workers as an OpenAI
 * chat.completions request (requestBody: the system prompt as the first message, the sampling form's settings
 * under their API names, the stop strings; streamed), through api_requests.js as web/pychat.js's engine sends
 * its requests; Python answers it, reusing its KV cache for the prefix it already holds, and keeps nothing
 * else. An answer that streamed is kept (also when stopped, or cut short by a crash); a turn that fails before
 * its first piece leaves the conversation as it was and puts the message back in the input.
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

  /* The saved stats of an answer (chat_view.js shows them) from its stream's usage chunk: llama.cpp's timings
   * (prompt tokens run and reused, tokens sampled with the end-of-turn token) and the finish reason. */
  function answerStats({timings, context_budget: budget}, finishReason) {
    const contextFull = finishReason === "length" && budget.used >= budget.context;
    return {prompt_tokens: timings.prompt_n, reused_tokens: timings.cache_n, generated_tokens: timings.predicted_n,
            prompt_tps: timings.prompt_per_second, generation_tps: timings.predicted_per_second,
            stop_reason: contextFull ? "context_full" : finishReason};
  }

  class ChatController {
    constructor({models, setPhase, alertBox}) {
      this.models = models;
      this.setPhase = setPhase;
      this.alertBox = alertBox;
      this.view = new Pychat.ChatView(document.getElementById("messages"));
      this.meter = document.getElementById("context-budget");
      this.requests = new Pychat.ApiRequests(() => models.python);  // the pool in use: models.js restarts it
      this.aborter = null;         // stops the answer being written
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
      const view = this.view.add(message.role, message.content, {toolCalls: message.tool_calls});
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
      const {messages: sent, max_tokens} = this.requestBody({...this.conversation, messages});  // max_tokens: the answer's room
      return (await this.models.python.request("budget", {body: {messages: sent, max_tokens}})).budget;
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

    /* The chat.completions request that answers `conversation` ({system_prompt, messages}), sent whole: the
     * sampling form's settings (an empty field: the page's default, not OpenAI's; no seed: the pool picks
     * one), usage and the context budget on every chunk (the meter), the oldest turns dropped when the
     * context is full. */
    requestBody({system_prompt, messages}) {
      const system = system_prompt ? [{role: "system", content: system_prompt}] : [];
      const settings = this.form.settings();
      for (const name of Object.keys(settings)) settings[name] ??= this.form.defaults[name];
      const stop = this.form.stops();
      return {messages: system.concat(modelMessages(messages)), ...settings,
              stop: stop.length ? stop : null, stream: true,
              stream_options: {include_usage: true, continuous_usage_stats: true}, truncation: "auto"};
    }

    /* The Settings dialog's response format and tools as the request's fields (sampling_form.js), or its
     * SettingsError saying what is wrong with them. */
    constraints() {
      const response_format = this.form.responseFormat(), tools = this.form.tools();
      return {...(response_format ? {response_format} : {}), ...(tools ? {tools} : {})};
    }

    /* Answer `messages` (ending with the user's): shown at once, saved once the answer has streamed. */
    runTurn(messages, {unsent = null} = {}) {
      const conversation = this.conversation;
      let constraints;
      try {
        constraints = this.constraints();
      } catch (error) {  // a schema or tools that are no JSON: nothing sent, nothing changed
        this.alertBox("error", error.message);
        if (unsent !== null && !this.$("input").value) this.$("input").value = unsent;
        return Promise.resolve(null);
      }
      if (messages.length === conversation.messages.length + 1) {  // a new message: the rest stays as shown
        this.addMessage(messages[messages.length - 1], messages.length - 1);
      } else {  // regenerate, or edit and send: from there on it changes
        this.renderMessages(messages);
      }
      this.offerRegenerate(null);
      const answer = this.view.add("assistant", "");
      answer.setNote("Reading the prompt…");
      this.generating = true;
      this.setPhase("generating", "Writing…");
      const started = performance.now();
      let firstToken = null;
      let finishReason = null;
      let usage = null;  // include_usage's last chunk: the answer's usage, timings and context budget
      const toolCalls = [];  // OpenAI's tool_calls, put together from their streamed pieces
      const onChunk = (chunk) => {
        if (chunk.context_budget) this.showBudget(chunk.context_budget);
        if (!chunk.choices.length) {
          const progress = chunk.prompt_progress;  // a long prompt, read chunk by chunk
          if (progress) answer.setNote(`Reading the prompt: ${progress.processed} / ${progress.total} tokens`);
          else usage = chunk;
          return;
        }
        const {delta, finish_reason: reason} = chunk.choices[0];
        if (delta.content) {
          if (firstToken === null) {
            firstToken = (performance.now() - started) / 1000;
            answer.setNote("");
          }
          answer.append(delta.content);
          this.view.scroll();
        }
        for (const piece of delta.tool_calls || []) {
          const call = toolCalls[piece.index] ??= {id: piece.id, type: "function", function: {name: "", arguments: ""}};
          call.function.name += (piece.function && piece.function.name) || "";
          call.function.arguments += (piece.function && piece.function.arguments) || "";
          answer.setNote("");
          answer.showToolCalls(toolCalls);
        }
        if (reason) finishReason = reason;
      };
      const aborter = this.aborter = new AbortController();
      let outOfMemory = false;
      const body = {...this.requestBody({...conversation, messages}), ...constraints};
      this.turn = this.requests.request("chat.completions", body, {signal: aborter.signal})
        .then(async (chunks) => {
          for await (const chunk of chunks) onChunk(chunk);
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
          const text = answer.text;
          if (!usage && !text) {  // failed before its first piece: as it was, the message back in the input
            if (unsent !== null && !this.$("input").value) this.$("input").value = unsent;
            if (this.conversation.id === conversation.id) this.renderMessages(conversation.messages);
            return;
          }
          const stats = usage && answerStats(usage, finishReason);
          if (stats) answer.setStats(stats, firstToken);
          if (stats && stats.stop_reason === "context_full") {
            answer.addNotice("The context is full: the answer was cut short. The next message will drop the oldest turns.");
          }
          const reply = {role: "assistant", content: text, stats, first_token: firstToken,
                         ...(toolCalls.length ? {tool_calls: toolCalls} : {})};
          if (this.conversation.id === conversation.id) this.offerRegenerate(answer);
          const dropped = usage ? usage.context_budget.dropped : conversation.dropped || 0;  // marked again after a reload
          return this.save({...conversation, messages: messages.concat(reply), dropped});
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

  /* The messages as the model reads them: a user's with its attachments (attachments.js), a past answer without
   * its reasoning (reasoning.js); docs/chat.md says why. */
  function modelMessages(messages) {
    return messages.map((m) => ({role: m.role, content: m.role === "user" ? Pychat.Attachments.promptText(m)
                                                                         : Pychat.Reasoning.answerOnly(m.content)}));
  }

  Object.assign(Pychat, {ChatController});
})(self.Pychat = self.Pychat || {});
