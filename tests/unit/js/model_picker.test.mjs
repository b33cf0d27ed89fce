/*
 * web/model_picker.js: the header's model picker lists the cached models that can be used (complete, or with a
 * URL to download the rest from), the one in use chosen; choosing another calls the model list's Use, and when
 * that is refused (an answer is being written) or fails, the picker shows the model in use again. The select
 * here is a stand-in with options and a value; the real one is used in Chromium (tests/browser/test_e2e_settings.py).
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts} from "./web_scripts.mjs";

class Option {
  constructor(text, value) { Object.assign(this, {text, value}); }
}

function fakeSelect() {
  return {options: [], value: "", onchange: null, replaceChildren(...options) { this.options = options; }};
}

const {ModelPicker} = loadWebScripts(["model_picker.js"], {Option}).Pychat;
const RECORDS = [
  {id: "default/a.gguf", name: "a.gguf", complete: true, url: "a.gguf"},
  {id: "file/b.gguf/10", name: "b.gguf", complete: true, url: ""},
  {id: "url/c.gguf", name: "c.gguf", complete: false, url: "https://host/c.gguf"},  // resumable
  {id: "file/d.gguf/9", name: "d.gguf", complete: false, url: ""},  // a partial file: cannot be used
];

test("the usable models, the one in use chosen; before one is loaded, Loading…", () => {
  const select = fakeSelect();
  const picker = new ModelPicker(select, () => true);
  picker.render(RECORDS, null);
  assert.deepEqual(select.options.map((o) => [o.value, o.text]),
                   [["", "Loading…"], ["default/a.gguf", "a.gguf"], ["file/b.gguf/10", "b.gguf"], ["url/c.gguf", "c.gguf"]]);
  assert.equal(select.value, "");
  picker.render(RECORDS, "file/b.gguf/10");
  assert.deepEqual(select.options.map((o) => o.text), ["a.gguf", "b.gguf", "c.gguf"]);
  assert.equal(select.value, "file/b.gguf/10");
});

test("choosing a model uses it; once switched, the picker shows what the last render said is in use", async () => {
  const select = fakeSelect();
  const used = [];
  const picker = new ModelPicker(select, async (record) => { used.push(record.id); picker.render(RECORDS, record.id); });
  picker.render(RECORDS, "default/a.gguf");
  select.value = "url/c.gguf";
  await select.onchange();
  assert.deepEqual(used, ["url/c.gguf"]);
  assert.equal(select.value, "url/c.gguf");
});

test("a refused or failed switch shows the model in use again; choosing it again does nothing", async () => {
  const select = fakeSelect();
  const used = [];
  const picker = new ModelPicker(select, (record) => { used.push(record.id); return false; });
  picker.render(RECORDS, "default/a.gguf");
  select.value = "file/b.gguf/10";
  await select.onchange();
  assert.equal(select.value, "default/a.gguf");
  select.value = "default/a.gguf";
  await select.onchange();
  assert.deepEqual(used, ["file/b.gguf/10"]);
});
