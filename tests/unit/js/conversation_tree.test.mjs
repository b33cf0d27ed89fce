/*
 * web/conversation_tree.js (a conversation's versions as a tree) against the behaviour it documents, as
 * llama.cpp's web UI has it: Edit and Regenerate add a version beside the old message, every version keeps
 * the continuation it had, the shown path runs from the first message through each node's selected child, and
 * a flat conversation of the older format becomes one branch with nothing lost. Then the same tree through
 * conversation_store.js's JSON backup (the whole tree back), and Markdown / JSONL export and search
 * (conversation_export.js, conversation_search.js: the shown branch only).
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const page = loadWebScripts(["util.js", "conversation_tree.js", "conversation_store.js", "conversation_export.js",
                             "conversation_search.js"],
                            {localStorage: {getItem: () => null, setItem() {}, removeItem() {}}});
const {ConversationTree: Tree, ConversationStore, ConversationExport, ConversationSearch} = page.Pychat;

const user = (content, extra = {}) => ({role: "user", content, ...extra});
const assistant = (content, extra = {}) => ({role: "assistant", content, ...extra});
const texts = (conversation) => plain(conversation.messages.map((m) => m.content));
const label = (conversation, index) => {
  const {n, m} = Tree.versions(conversation, Tree.shownPath(conversation)[index].id);
  return `${n} / ${m}`;
};

/* A flat conversation of format 1 as the page stored it before branches: every field a message could have. */
const FLAT = {
  id: "c-1", title: "Capitals", titled: true, system_prompt: "Be brief.", created: 1, updated: 2, dropped: 2,
  messages: [user("Capital of France?", {attachments: [{name: "a.txt", type: "text/plain", text: "x", tokens: 1}]}),
             assistant("Paris.", {stats: {generated_tokens: 3}, first_token: 0.5}),
             user("And Italy?"),
             assistant("Rome.", {tool_calls: [{id: "call_1", type: "function", function: {name: "f", arguments: "{}"}}]})]};

/* Q1 A1 Q2 A2, then Q2 edited (Q2b, answered A2b), then A2b regenerated (A2c): the page's two ways to branch. */
function branched() {
  let c = Tree.shown(Tree.migrate({messages: [user("Q1"), assistant("A1"), user("Q2"), assistant("A2")]}));
  const q2 = Tree.shownPath(c)[2];
  let id;
  ({conversation: c, id} = Tree.add(c, q2.parent, user("Q2b")));   // Edit: a sibling of Q2
  ({conversation: c} = Tree.add(c, id, assistant("A2b")));         // its answer
  ({conversation: c} = Tree.add(c, id, assistant("A2c")));         // Regenerate: a sibling of A2b
  return c;
}

test("a flat conversation migrates to one branch, losslessly, and is shown as it was", () => {
  const tree = Tree.migrate(FLAT);
  assert.equal(tree.version, 2);
  assert.equal(tree.selected, 0);
  assert.deepEqual(plain(tree.nodes.map(({id, parent, selected}) => [id, parent, selected])),
                   [[0, null, 1], [1, 0, 2], [2, 1, 3], [3, 2, null]]);
  const shown = Tree.shown(tree);
  // every field of every message is kept; the conversation's dropped count went to its last answer and back
  assert.deepEqual(plain(shown.messages), plain(FLAT.messages.map((m, i) => (i === 3 ? {...m, dropped: 2} : m))));
  assert.equal(shown.dropped, 2);
  for (const key of ["id", "title", "titled", "system_prompt", "created", "updated"]) {
    assert.equal(shown[key], FLAT[key]);
  }
  assert.equal(Tree.migrate(tree), tree);  // format 2 stays as it is
  const stored = Tree.record(shown);  // what IndexedDB gets: the tree without what is derived from it
  assert.ok(!("messages" in stored) && !("dropped" in stored));
  assert.deepEqual(plain(Tree.shown(stored)), plain(shown));
  assert.deepEqual(plain(Tree.shown(Tree.migrate({messages: []}))).messages, []);
});

test("Edit and Regenerate add versions; the shown path continues the newest", () => {
  const c = branched();
  assert.deepEqual(texts(c), ["Q1", "A1", "Q2b", "A2c"]);
  assert.deepEqual([0, 1, 2, 3].map((i) => label(c, i)), ["1 / 1", "1 / 1", "2 / 2", "2 / 2"]);
  assert.equal(c.nodes.length, 7);  // nothing was thrown away
  assert.deepEqual(plain(Tree.versions(c, 2)), {n: 1, m: 2, previous: null, next: 4});
  assert.deepEqual(plain(Tree.versions(c, 4)), {n: 2, m: 2, previous: 2, next: null});
  assert.deepEqual(plain(Tree.pathTo(c, 4).map((node) => node.content)), ["Q1", "A1", "Q2b"]);  // what its answer is sent
  assert.deepEqual(plain(Tree.pathTo(c, null)), []);
});

test("switching a version restores the continuation that version was left with", () => {
  let c = branched();
  c = Tree.select(c, Tree.versions(c, 6).previous);  // the answer back to A2b
  assert.deepEqual(texts(c), ["Q1", "A1", "Q2b", "A2b"]);
  c = Tree.select(c, 2);  // Q2: its own answer, A2
  assert.deepEqual(texts(c), ["Q1", "A1", "Q2", "A2"]);
  assert.deepEqual([2, 3].map((i) => label(c, i)), ["1 / 2", "1 / 1"]);
  c = Tree.select(c, 4);  // Q2b again: with A2b, as it was left, not the newest A2c
  assert.deepEqual(texts(c), ["Q1", "A1", "Q2b", "A2b"]);
  assert.equal(label(c, 3), "1 / 2");
  // a new message goes after the shown branch, and the other branches stay whole
  const {conversation: next} = Tree.add(c, Tree.shownPath(c)[3].id, user("Q3"));
  assert.deepEqual(texts(next), ["Q1", "A1", "Q2b", "A2b", "Q3"]);
  assert.deepEqual(texts(Tree.select(next, 2)), ["Q1", "A1", "Q2", "A2"]);
  assert.deepEqual(texts(Tree.select(next, 6)), ["Q1", "A1", "Q2b", "A2c"]);
  assert.deepEqual(texts(c), ["Q1", "A1", "Q2b", "A2b"]);  // the conversation it came from is unchanged
});

test("an edit of the first message is a second root; each root keeps its own branch", () => {
  let c = Tree.shown(Tree.migrate({messages: [user("Hi"), assistant("Hello")]}));
  ({conversation: c} = Tree.add(c, null, user("Hey")));
  assert.deepEqual(texts(c), ["Hey"]);
  assert.equal(label(c, 0), "2 / 2");
  assert.deepEqual(texts(Tree.select(c, 0)), ["Hi", "Hello"]);
  assert.equal(Tree.record(Tree.select(c, 0)).selected, 0);
});

test("the JSON backup keeps the whole tree and which branch is shown; format 1 still imports", () => {
  const c = Tree.select(branched(), 2);
  const conversation = {...ConversationStore.create({title: "Branches"}), ...Tree.record(c)};
  const [back] = ConversationStore.parseImport(ConversationStore.exportJSON([Tree.shown(conversation)]));
  const tree = (nodes) => plain(nodes.map(({id, parent, selected, role, content}) => [id, parent, selected, role, content]));
  assert.deepEqual(tree(back.nodes), tree(c.nodes));
  assert.deepEqual(texts(back), ["Q1", "A1", "Q2", "A2"]);
  assert.equal(back.version, 2);
  assert.equal(ConversationStore.fingerprint(back), ConversationStore.fingerprint(conversation));
  const [flat] = ConversationStore.parseImport(JSON.stringify({format: "pychat-conversations", version: 1,
                                                                conversations: [FLAT]}));
  assert.deepEqual(texts(flat), FLAT.messages.map((m) => m.content));
  assert.equal(flat.nodes.length, 4);
});

test("an imported tree whose message follows no earlier one is refused, saying which", () => {
  const nodes = [{id: 0, parent: null, role: "user", content: "a"},
                 {id: 1, parent: 5, role: "assistant", content: "b"}];
  assert.throws(() => ConversationStore.parseImport(JSON.stringify({nodes})),
                (error) => error.name === "ConversationImportError" &&
                  error.message === "The conversation: message 2 follows no earlier message");
  const tool = {nodes: [{id: 0, parent: null, role: "tool", content: "x"}]};
  assert.throws(() => ConversationStore.parseImport(JSON.stringify(tool)), /message 1 has no role user or assistant/);
});

test("Markdown and JSONL export the shown branch; search finds what is shown", () => {
  const c = Tree.select(branched(), 5);  // Q1 A1 Q2b A2b
  const conversation = {...ConversationStore.create({title: "Branches"}), ...c};
  assert.equal(ConversationExport.toMarkdown([conversation]),
               "# Branches\n\n## User\n\nQ1\n\n## Assistant\n\nA1\n\n## User\n\nQ2b\n\n## Assistant\n\nA2b\n");
  assert.deepEqual(JSON.parse(ConversationExport.toJsonl([conversation]).text).messages.map((m) => m.content),
                   ["Q1", "A1", "Q2b", "A2b"]);
  const hits = ConversationSearch.findHits([conversation], "a2");
  assert.deepEqual(plain(hits.map((hit) => [hit.index, hit.snippet.match])), [[3, "A2"]]);  // A2b; A2, A2c: elsewhere
});
