/*
 * answer_stream.js: one answer as its chat.completions stream comes in. Each chunk goes to the answer's
 * MessageView (chat_view.js): the prompt's progress as a note, content deltas as text, tool-call pieces put
 * together into OpenAI's tool_calls; the context budget of every chunk goes to onBudget. At the end it makes
 * the answer the conversation saves, with its stats from the usage chunk (llama.cpp's timings: prompt tokens
 * run and reused from the KV cache, tokens sampled) and how many old messages its prompt left out.
 *
 *     const stream = new Pychat.AnswerStream(view, {onBudget: (budget) => ..., onText: () => list.scroll()});
 *     for await (const chunk of chunks) stream.add(chunk);
 *     stream.reply(dropped);  // {role: "assistant", content, stats, first_token, tool_calls?, dropped?}, or null:
 *                             // nothing came (dropped: the count to keep when no usage chunk came)
 */
(function (Pychat) {
  "use strict";

  /* The saved stats of an answer (chat_view.js shows them) from its stream's usage chunk: llama.cpp's timings
   * (prompt tokens run and reused, tokens sampled with the end-of-turn token) and the finish reason. */
  function answerStats({timings, context_budget: budget}, finishReason) {
    const contextFull = finishReason === "length" && budget.used >= budget.context;
    return {prompt_tokens: timings.prompt_n, reused_tokens: timings.cache_n, generated_tokens: timings.predicted_n,
            prompt_tps: timings.prompt_per_second, generation_tps: timings.predicted_per_second,
            stop_reason: contextFull ? "context_full" : finishReason};
  }

  class AnswerStream {
    constructor(view, {onBudget, onText}) {
      Object.assign(this, {view, onBudget, onText});
      this.started = performance.now();
      this.firstToken = null;    // seconds to the first piece of text
      this.finishReason = null;
      this.usage = null;         // include_usage's last chunk: the answer's usage, timings and context budget
      this.toolCalls = [];       // OpenAI's tool_calls, put together from their streamed pieces
      view.setNote("Reading the prompt…");
    }

    add(chunk) {
      if (chunk.context_budget) this.onBudget(chunk.context_budget);
      if (!chunk.choices.length) {
        const progress = chunk.prompt_progress;  // a long prompt, read chunk by chunk
        if (progress) this.view.setNote(`Reading the prompt: ${progress.processed} / ${progress.total} tokens`);
        else this.usage = chunk;
        return;
      }
      const {delta, finish_reason: reason} = chunk.choices[0];
      if (delta.content) {
        if (this.firstToken === null) {
          this.firstToken = (performance.now() - this.started) / 1000;
          this.view.setNote("");
        }
        this.view.append(delta.content);
        this.onText();
      }
      for (const piece of delta.tool_calls || []) {
        const call = this.toolCalls[piece.index] ??= {id: piece.id, type: "function",
                                                      function: {name: "", arguments: ""}};
        call.function.name += (piece.function && piece.function.name) || "";
        call.function.arguments += (piece.function && piece.function.arguments) || "";
        this.view.setNote("");
        this.view.showToolCalls(this.toolCalls);
      }
      if (reason) this.finishReason = reason;
    }

    /* The answer to save, its stats shown (and a full context said), or null when not a piece of it came;
     * `droppedBefore`: the old messages left out, kept when the stream ended before its usage chunk. */
    reply(droppedBefore = 0) {
      const {usage, view} = this;
      if (!usage && !view.text) return null;
      const stats = usage && answerStats(usage, this.finishReason);
      if (stats) view.setStats(stats, this.firstToken);
      if (stats && stats.stop_reason === "context_full") {
        view.addNotice("The context is full: the answer was cut short. The next message will drop the oldest turns.");
      }
      const dropped = usage ? usage.context_budget.dropped : droppedBefore;
      return {role: "assistant", content: view.text, stats, first_token: this.firstToken,
              ...(this.toolCalls.length ? {tool_calls: this.toolCalls} : {}), ...(dropped ? {dropped} : {})};
    }
  }

  Object.assign(Pychat, {AnswerStream});
})(self.Pychat = self.Pychat || {});
