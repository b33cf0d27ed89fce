/*
 * web/conversation_store.js's import of conversations (ConversationStore.parseImport), against the export
 * format it documents: {"format": "pychat-conversations", "version": 1, "conversations": [...]}, or one
 * conversation {messages: [...]} on its own. Every import gets fresh ids; anything else is a
 * ConversationImportError that names what is wrong, and where.
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const {ConversationStore} = loadWebScripts(["conversation_tree.js", "conversation_store.js"]).Pychat;

const EXPORTED = {
  format: "pychat-conversations", version: 1,
  conversations: [
    {title: "Capitals", titled: true, system_prompt: "Be brief.", created: 1000, updated: 2000,
     messages: [{role: "user", content: "Capital of France?"}, {role: "assistant", content: "Paris."}]},
    {title: "ignored: not renamed", titled: false, system_prompt: "", created: 3000, updated: 4000,
     messages: [{role: "user", content: "  Hello\n\tthere  "}]},
  ],
};

function importError(text) {
  try {
    ConversationStore.parseImport(text);
  } catch (error) {
    assert.equal(error.name, "ConversationImportError");
    return error.message;
  }
  assert.fail("no ConversationImportError for " + text.slice(0, 80));
}

test("an export is read back: messages, system prompt, chosen titles and times", () => {
  const imported = plain(ConversationStore.parseImport(JSON.stringify(EXPORTED)));
  assert.equal(imported.length, 2);
  const [first, second] = imported;
  assert.deepEqual(first.messages, EXPORTED.conversations[0].messages);
  assert.deepEqual([first.title, first.titled, first.system_prompt, first.created, first.updated],
                   ["Capitals", true, "Be brief.", 1000, 2000]);
  // a title the user never chose comes from the first user message, on one line
  assert.deepEqual([second.title, second.titled, second.created, second.updated], ["Hello there", false, 3000, 4000]);
});

test("each import gets fresh ids, so importing twice overwrites nothing", () => {
  const once = ConversationStore.parseImport(JSON.stringify(EXPORTED));
  const twice = ConversationStore.parseImport(JSON.stringify(EXPORTED));
  const ids = [...once, ...twice].map((c) => c.id);
  assert.equal(new Set(ids).size, 4);
  assert.ok(ids.every((id) => /^c-[0-9a-z]+-[0-9a-f]{12}$/.test(id)), ids.join());
});

test("the page's own export round-trips", () => {
  const original = ConversationStore.parseImport(JSON.stringify(EXPORTED));
  const again = ConversationStore.parseImport(ConversationStore.exportJSON(original));
  const kept = (c) => plain({title: c.title, titled: c.titled, system_prompt: c.system_prompt,
                             messages: c.messages, created: c.created, updated: c.updated});
  assert.deepEqual(again.map(kept), original.map(kept));
});

test("one conversation on its own is read as a list of one", () => {
  const [only] = plain(ConversationStore.parseImport(JSON.stringify({messages: [{role: "user", content: "Hi"}]})));
  assert.deepEqual(only.messages, [{role: "user", content: "Hi"}]);
  assert.equal(only.system_prompt, "");
  assert.ok(only.created > 0 && only.updated === only.created);  // no times given: now
});

test("only role and content of a message are kept; bad times become the import's", () => {
  const [only] = plain(ConversationStore.parseImport(JSON.stringify({
    created: -5, updated: "yesterday",
    messages: [{role: "assistant", content: "x", stats: {tokens: 3}, html: "<b>x</b>"}],
  })));
  assert.deepEqual(only.messages, [{role: "assistant", content: "x"}]);
  assert.ok(only.created > 0 && only.updated === only.created);
});

test("what is not an export is refused with a message that says why and where", () => {
  assert.match(importError("{not json"), /^The file is not JSON \(/);
  assert.match(importError("[1, 2]"), /is not a pychat-wasm conversation export/);
  assert.match(importError(JSON.stringify({format: "other", conversations: []})),
               /neither "format": "pychat-conversations" with a list of conversations nor a list of messages/);
  const bad = (conversation) => importError(JSON.stringify({...EXPORTED, conversations: [EXPORTED.conversations[0], conversation]}));
  assert.equal(bad(7), "Conversation 2: not an object");
  assert.equal(bad({messages: "hi"}), "Conversation 2: no list of messages");
  assert.equal(bad({messages: [{role: "user", content: "a"}, {role: "system", content: "b"}]}),
               "Conversation 2: message 2 has no role user or assistant");
  assert.equal(bad({messages: [{role: "user", content: 5}]}), "Conversation 2: message 1 has no text content");
  assert.equal(bad({messages: [], system_prompt: ["x"]}), "Conversation 2: the system prompt is not text");
  assert.equal(bad({messages: [], title: 3}), "Conversation 2: the title is not text");
  assert.equal(importError(JSON.stringify({messages: [null]})), "The conversation: message 1 has no role user or assistant");
});

test("a file too large to be an export is refused before it is parsed", () => {
  const huge = "[" + " ".repeat(50 * 1024 * 1024) + "]";
  assert.match(importError(huge), /^The file is too large to be a conversation export \(over 50 MB\)\.$/);
});
