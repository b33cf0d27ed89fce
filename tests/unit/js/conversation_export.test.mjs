/*
 * web/conversation_export.js (Markdown and JSONL out, JSONL in) and web/conversation_search.js's pure parts
 * (the hits and their snippets), against the formats they document: JSONL is one {"messages": [...]} object per
 * line, parsed here line by line with JSON.parse; Markdown is "# title" then "## Role" sections.
 * tests/unit/test_conversation_jsonl.py feeds the same JSONL to the engine's fine-tuning reader.
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const page = loadWebScripts(["util.js", "conversation_tree.js", "conversation_store.js", "conversation_export.js",
                             "conversation_search.js"],
                            {localStorage: {getItem: () => null, setItem() {}, removeItem() {}}});
const {ConversationExport, ConversationSearch, ConversationStore} = page.Pychat;

const CAPITALS = {id: "c-1", title: "Capitals", titled: true, system_prompt: "Be brief.", created: 1, updated: 2, messages: [
  {role: "user", content: "Capital of France?"}, {role: "assistant", content: "**Paris**.", stats: {tokens: 3}}]};
const UNANSWERED = {id: "c-2", title: "Hello  there\n", system_prompt: "", created: 3, updated: 4,
                    messages: [{role: "user", content: "Hello there"}]};
const ODD = {id: "c-3", title: "Odd lines", system_prompt: "", created: 5, updated: 6, messages: [
  {role: "user", content: "a\u2028b\u0085c\u2029d\r\ne\u000bf"}, {role: "assistant", content: "\"quoted\" \\ ok"}]};

function importError(run) {
  try {
    run();
  } catch (error) {
    assert.equal(error.name, "ConversationImportError");
    return error.message;
  }
  assert.fail("no ConversationImportError");
}

test("Markdown: the title, then each role's heading and its text, conversations apart by a rule", () => {
  assert.equal(ConversationExport.toMarkdown([CAPITALS]),
               "# Capitals\n\n## System\n\nBe brief.\n\n## User\n\nCapital of France?\n\n## Assistant\n\n**Paris**.\n");
  assert.equal(ConversationExport.toMarkdown([CAPITALS, UNANSWERED]).split("\n---\n\n")[1],
               "# Hello there\n\n## User\n\nHello there\n");
});

test("JSONL: one {messages} line per answered conversation, the system prompt first, role and content only", () => {
  const {text, left} = ConversationExport.toJsonl([CAPITALS, UNANSWERED, ODD]);
  assert.equal(left, 1);
  assert.ok(text.endsWith("\n"));
  const lines = text.slice(0, -1).split("\n");
  assert.equal(lines.length, 2);
  assert.deepEqual(JSON.parse(lines[0]), {messages: [
    {role: "system", content: "Be brief."}, {role: "user", content: "Capital of France?"},
    {role: "assistant", content: "**Paris**."}]});
  assert.deepEqual(JSON.parse(lines[1]).messages.map((m) => m.content), ODD.messages.map((m) => m.content));
  // No character that any line splitter (Python's str.splitlines too) breaks a line at is left raw
  assert.doesNotMatch(lines[1], /[\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/);
});

test("JSONL read back gives the same messages and system prompt, with fresh ids and titles from the text", () => {
  const back = ConversationExport.parseJsonl(ConversationExport.toJsonl([CAPITALS, ODD]).text);
  assert.deepEqual(plain(back.map(({system_prompt, messages}) => ({system_prompt, messages}))), [
    {system_prompt: "Be brief.", messages: CAPITALS.messages.map(({role, content}) => ({role, content}))},
    {system_prompt: "", messages: ODD.messages}]);
  assert.deepEqual(plain(back.map((c) => c.title)), ["Capital of France?", "a b\u0085c d e f"]);
  assert.ok(back.every((c) => /^c-[0-9a-z]+-[0-9a-f]{12}$/.test(c.id) && !c.titled));
});

test("JSONL: blank lines, CRLF and a byte-order mark are fine; extra keys are ignored", () => {
  const text = '\ufeff{"messages": [{"role": "user", "content": "Hi", "weight": 1}]}\r\n\r\n' +
               '{"messages": [{"role": "assistant", "content": "Yes"}], "tools": []}\r\n';
  assert.deepEqual(plain(ConversationExport.parseJsonl(text).map((c) => c.messages)),
                   [[{role: "user", content: "Hi"}], [{role: "assistant", content: "Yes"}]]);
});

test("a bad JSONL line is named, and nothing of the file is taken", () => {
  const good = '{"messages": [{"role": "user", "content": "Hi"}]}';
  const error = (...lines) => importError(() => ConversationExport.parseJsonl(lines.join("\n")));
  assert.match(error(good, "", "{oops"), /^Line 3: not JSON \(/);
  assert.equal(error(good, "[1]"), 'Line 2: not a {"messages": [...]} object');
  assert.equal(error(good, '{"text": "hi"}'), 'Line 2: not a {"messages": [...]} object');
  assert.equal(error('{"messages": []}'), "Line 1: no user or assistant message");
  assert.equal(error('{"messages": [{"role": "user", "content": ["a"]}]}'), "Line 1: message 1 has no text content");
  assert.equal(error('{"messages": [null]}'), "Line 1: message 1 has no text content");
  assert.match(error(good, '{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}'),
               /^Line 2: message 2 has the role "system": a conversation here is an optional first "system" message/);
  assert.match(error('{"messages": [{"role": "tool", "content": "1"}]}'), /^Line 1: message 1 has the role "tool"/);
  assert.equal(error("", "  "), 'The file holds no conversation: JSONL has one {"messages": [...]} object per line.');
});

test("file names and formats: one conversation after its title, all after the day", () => {
  const day = new Date("2026-12-07T17:00:00Z");
  const file = (conversations, format, scope) => plain(ConversationExport.exportFile(conversations, format, scope, day));
  assert.deepEqual(file([CAPITALS], "markdown", "one"), {name: "pychat-capitals.md", type: "text/markdown",
                                                         text: ConversationExport.toMarkdown([CAPITALS]), left: 0});
  assert.equal(file([CAPITALS, UNANSWERED], "jsonl", "all").name, "pychat-conversations-2026-12-07.jsonl");
  assert.equal(file([CAPITALS, UNANSWERED], "jsonl", "all").left, 1);
  const json = file([CAPITALS], "json", "all");
  assert.equal(json.type, "application/json");
  assert.deepEqual(plain(ConversationStore.parseImport(json.text)[0].messages), [
    {role: "user", content: "Capital of France?"}, {role: "assistant", content: "**Paris**."}]);
  assert.equal(file([{...CAPITALS, title: "  Qu'est-ce que c'est ?! Été 2026 / «ok» "}], "jsonl", "one").name,
               "pychat-qu-est-ce-que-c-est-été-2026-ok.jsonl");
  assert.equal(file([{...CAPITALS, title: "???"}], "markdown", "one").name, "pychat-conversation.md");
});

test("an import is JSONL when named .jsonl or when its first line is a {messages} object; else a JSON backup", async () => {
  const file = (name, text) => ({name, size: text.length, async text() { return text; }});
  const line = '{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]}';
  const one = await ConversationExport.readImport(file("one.jsonl", line));
  assert.deepEqual(plain(one.map((c) => [c.system_prompt, c.messages])), [["S", [{role: "user", content: "Hi"}]]]);
  assert.equal((await ConversationExport.readImport(file("chats.txt", line + "\n" + line))).length, 2);
  const backup = ConversationExport.exportFile([CAPITALS, UNANSWERED], "json", "all").text;
  assert.deepEqual(plain((await ConversationExport.readImport(file("backup.json", backup))).map((c) => c.title)),
                   ["Capitals", "Hello there"]);
  const bad = file("bad.jsonl", line + "\n{");
  await assert.rejects(ConversationExport.readImport(bad), /^ConversationImportError: Line 2: not JSON/);
});

test("an import over the size limit is refused from its size, before it is read", async () => {
  let read = false;
  const huge = {name: "huge.jsonl", size: 51 * 1024 * 1024, async text() { read = true; return ""; }};
  await assert.rejects(ConversationExport.readImport(huge), /too large to be a conversation export \(over 50 MB\)/);
  assert.equal(read, false);
});

test("search: every matching message, case-insensitive, in the list's order; a title only when no message matches", () => {
  const conversations = [CAPITALS, UNANSWERED, {...ODD, title: "About PARIS"}];
  const hits = plain(ConversationSearch.findHits(conversations, "  paris "));
  assert.deepEqual(hits.map((h) => [h.id, h.index, h.role]), [["c-1", 1, "assistant"], ["c-3", -1, "title"]]);
  assert.deepEqual(hits[0].snippet, {before: "**", match: "Paris", after: "**."});
  assert.deepEqual(plain(ConversationSearch.findHits(conversations, "HELLO")).map((h) => [h.id, h.index]), [["c-2", 0]]);
  assert.deepEqual(plain(ConversationSearch.findHits(conversations, "")), []);
  assert.deepEqual(plain(ConversationSearch.findHits(conversations, "(.*)")), []);  // a literal, not a pattern
  const many = Array.from({length: 60}, (_, i) => ({...CAPITALS, id: "m" + i}));
  assert.equal(ConversationSearch.findHits(many, "capital").length, 50);
  assert.equal(ConversationSearch.findHits(many, "capital", 7).length, 7);
});

test("search snippets: the match in context on one line, cut with an ellipsis", () => {
  const text = "x".repeat(100) + "\n\nthe  Needle\tin\n" + "y".repeat(100);
  const {before, match, after} = ConversationSearch.snippet(text, text.indexOf("Needle"), 6);
  assert.equal(match, "Needle");
  assert.ok(before.startsWith("…") && before.endsWith(" the "), before);
  assert.ok(after.startsWith(" in ") && after.endsWith("…"), after);
  assert.deepEqual(plain(ConversationSearch.snippet("Needle", 0, 6)), {before: "", match: "Needle", after: ""});
});
