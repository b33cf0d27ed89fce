/*
 * reasoning.js: an answer's reasoning apart from its answer. Reasoning models write their thoughts first, inside
 * <think>…</think> (Qwen3, QwQ, DeepSeek-R1 distills); DeepSeek-R1's own template opens the block in the prompt,
 * so its answers hold only the closing </think>. The page shows the reasoning as a collapsed "Reasoning" block
 * (chat_view.js) and sends past answers to the model without it (chat.js), as Qwen3's and DeepSeek-R1's
 * templates do themselves: docs/chat.md, "Reasoning".
 *
 *     Pychat.Reasoning.split("<think>France's capital.</think>\n\nParis.")
 *       -> {reasoning: "France's capital.", answer: "Paris.", thinking: false}
 *     Pychat.Reasoning.split("<think>France's cap")      // streaming, the block not closed yet
 *       -> {reasoning: "France's cap", answer: "", thinking: true}
 *     Pychat.Reasoning.split("Paris.")  -> {reasoning: "", answer: "Paris.", thinking: false}
 *
 * A <think> counts only at the start of the answer (after blanks): one further on is part of the answer's text.
 */
(function (Pychat) {
  "use strict";

  const OPEN = "<think>";
  const CLOSE = "</think>";

  /* {reasoning, answer, thinking}: thinking is true while the block is open (the answer has not begun). */
  function split(text) {
    const start = text.length - text.trimStart().length;
    const opened = text.startsWith(OPEN, start);
    const from = opened ? start + OPEN.length : 0;
    const close = text.indexOf(CLOSE, from);
    if (close === -1) {
      return opened ? {reasoning: text.slice(from).trim(), answer: "", thinking: true}
                    : {reasoning: "", answer: text, thinking: false};
    }
    if (!opened && text.lastIndexOf(OPEN, close) !== -1) {  // "<think>" inside the answer, not a block of its own
      return {reasoning: "", answer: text, thinking: false};
    }
    return {reasoning: text.slice(from, close).trim(), answer: text.slice(close + CLOSE.length).trimStart(),
            thinking: false};
  }

  /* What a past answer is sent to the model as: its answer without the reasoning. */
  function answerOnly(text) {
    return split(text).answer;
  }

  Object.assign(Pychat, {Reasoning: {split, answerOnly}});
})(self.Pychat = self.Pychat || {});
