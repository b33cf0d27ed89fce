/*
 * web/reasoning.js: an answer split at its reasoning block, as the answer streams and once it is done. The
 * expected parts are written out by hand from the texts (what a reader sees as thoughts and as the answer),
 * and the history rule is checked against what Qwen3's chat template does to a past answer
 * (content.split('</think>')[-1].lstrip('\n')) for the texts where the two must agree.
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const {Reasoning} = loadWebScripts(["reasoning.js"]).Pychat;
const split = (text) => plain(Reasoning.split(text));

test("a closed block: the reasoning and the answer after it", () => {
  assert.deepEqual(split("<think>\nThe capital of France is Paris.\n</think>\n\nParis."),
                   {reasoning: "The capital of France is Paris.", answer: "Paris.", thinking: false});
  assert.deepEqual(split("  <think>a</think>b"), {reasoning: "a", answer: "b", thinking: false});
});

test("an open block while streaming is the reasoning so far", () => {
  assert.deepEqual(split("<think>"), {reasoning: "", answer: "", thinking: true});
  assert.deepEqual(split("<think>First, the"), {reasoning: "First, the", answer: "", thinking: true});
  assert.deepEqual(split("<think>done</"), {reasoning: "done</", answer: "", thinking: true});
});

test("every prefix of a streamed answer splits consistently with the whole", () => {
  const whole = "<think>Two plus two.</think>\nFour.";
  for (let end = "<think>".length; end <= whole.length; end++) {
    const part = split(whole.slice(0, end));
    const closed = end >= whole.indexOf("</think>") + "</think>".length;
    assert.equal(part.thinking, !closed, whole.slice(0, end));
    assert.ok("Four.".startsWith(part.answer), whole.slice(0, end));
  }
});

test("DeepSeek-R1: the template opened the block, the answer holds only </think>", () => {
  assert.deepEqual(split("Okay, 2+2.\n</think>\n\n4"), {reasoning: "Okay, 2+2.", answer: "4", thinking: false});
});

test("answers without a block, or with <think> further on, are all answer", () => {
  for (const text of ["Paris.", "", "Use the <think> tag like this: <think>x</think>.", "a <think>b", "x <think>y</think> z"]) {
    assert.deepEqual(split(text), {reasoning: "", answer: text, thinking: false});
  }
});

test("answerOnly: what Qwen3's template keeps of a past answer", () => {
  const qwen3 = (content) => content.split("</think>").at(-1).replace(/^\n+/, "");
  for (const text of ["<think>\nhmm\n</think>\n\nParis.", "<think></think>Paris.", "Paris.", "<think>a</think>\n\n**b**\n"]) {
    assert.equal(Reasoning.answerOnly(text), qwen3(text));
  }
});
