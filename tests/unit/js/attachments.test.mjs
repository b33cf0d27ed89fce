/*
 * web/attachments.js: the format the model reads a user's files in (written out by hand here, as docs/chat.md
 * documents it), the checks a file passes before it is attached (its size before a byte is read, UTF-8, its
 * kind), and attachments kept through conversation_store.js's export and import.
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const {Attachments, ConversationStore} = loadWebScripts(
  ["util.js", "attachments.js", "conversation_tree.js", "conversation_store.js"], {File, Blob}).Pychat;

const NOTE = {name: "notes.txt", type: "text/plain", text: "The locker code is 4417.\n", tokens: 9};

test("a user message reads as its files, each fenced under its name, then the user's text", () => {
  assert.equal(Attachments.promptText({role: "user", content: "What is the locker code?", attachments: [NOTE]}),
               "File: notes.txt\n```\nThe locker code is 4417.\n```\n\nWhat is the locker code?");
  assert.equal(Attachments.promptText({role: "user", content: "Hi"}), "Hi");
  assert.equal(Attachments.promptText({role: "user", content: "", attachments: [NOTE, {name: "b.md", text: "x"}]}),
               "File: notes.txt\n```\nThe locker code is 4417.\n```\n\nFile: b.md\n```\nx\n```");
});

test("a file holding a fence gets a longer one, so its text cannot close the block", () => {
  const text = "Run:\n```sh\nmake\n```\nor ````x````";
  assert.equal(Attachments.promptBlock({name: "README.md", text}), "File: README.md\n`````\n" + text + "\n`````");
});

test("text files and PDFs are read; other kinds, non-UTF-8 text and big files are refused saying why", async () => {
  const read = (parts, name, type = "") => Attachments.readFile(new File(parts, name, {type}));
  assert.deepEqual(plain(await read(["a,b\n1,2\n"], "t.csv")), {name: "t.csv", type: "text/plain", text: "a,b\n1,2\n"});
  assert.deepEqual(plain(await read(["x = 1\n"], "s.py", "text/x-python")),
                   {name: "s.py", type: "text/x-python", text: "x = 1\n"});
  await assert.rejects(read(["MZ"], "tool.exe", "application/octet-stream"),
                       {name: "Error", message: /^tool\.exe: only text files .* and PDFs can be attached\.$/});
  await assert.rejects(read([new Uint8Array([0x66, 0xff, 0x66])], "latin.txt"), {message: "latin.txt is not UTF-8 text."});
  const big = new Uint8Array(Attachments.MAX_TEXT_BYTES + 1);
  await assert.rejects(read([big], "big.txt"), {message: /^big\.txt is 1\.0 MB; attachments are limited to 1\.0 MB/});
});

test("attachments are kept by an export and its import; bad ones are refused with where", () => {
  const conversation = ConversationStore.create({messages: [
    {role: "user", content: "Code?", attachments: [NOTE]}, {role: "assistant", content: "4417."}]});
  const [again] = plain(ConversationStore.parseImport(ConversationStore.exportJSON([conversation])));
  assert.deepEqual(again.messages, plain(conversation.messages));
  assert.throws(() => ConversationStore.parseImport(JSON.stringify({messages: [
    {role: "user", content: "x", attachments: [{name: "a.txt"}]}]})),
  {message: "The conversation: message 1: an attachment has no name or text"});
});
