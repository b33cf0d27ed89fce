/*
 * web/tool_calls.js: an assistant message's tool_calls (OpenAI's shape, as the openai clients and our API give
 * them: {id, type: "function", function: {name, arguments: a JSON text}}) as one block per call, the name and
 * the arguments indented, arguments that are no JSON as written. The DOM here is a stand-in recording what
 * render() builds; the page's own is checked in Chromium (tests/browser/test_e2e_settings.py).
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

/* Just enough of a document for page_ui.js's element(): nodes with a tag, class, text, dataset and children. */
const document = {
  createElement: (tag) => ({
    tag, className: "", textContent: "", dataset: {}, children: [],
    appendChild(child) { this.children.push(child); return child; },
    append(...children) { this.children.push(...children); },
  }),
};
const {ToolCalls} = loadWebScripts(["util.js", "page_ui.js", "tool_calls.js"], {document}).Pychat;

const WEATHER = {id: "call_1", type: "function", function: {name: "get_weather", arguments: '{"city":"Paris","days":[1,2]}'}};

test("each call's name and its arguments indented two spaces", () => {
  const time = {id: "call_2", type: "function", function: {name: "get_time", arguments: "{}"}};
  assert.deepEqual(plain(ToolCalls.describe([WEATHER, time])), [
    {id: "call_1", name: "get_weather", arguments: '{\n  "city": "Paris",\n  "days": [\n    1,\n    2\n  ]\n}'},
    {id: "call_2", name: "get_time", arguments: "{}"},
  ]);
});

test("arguments that are no JSON are shown as the model wrote them; odd calls still get a block", () => {
  const broken = {id: "call_3", type: "function", function: {name: "search", arguments: '{"q": "cats'}};
  assert.deepEqual(plain(ToolCalls.describe([broken, {type: "function", function: {arguments: '{"a":1}'}}, null])), [
    {id: "call_3", name: "search", arguments: '{"q": "cats'},
    {id: "", name: "(no name)", arguments: '{\n  "a": 1\n}'},
    {id: "", name: "(no name)", arguments: "{}"},
  ]);
  assert.deepEqual(plain(ToolCalls.describe(undefined)), []);
});

test("arguments given as an object (not the JSON text OpenAI sends) are indented too", () => {
  const call = {id: "c", type: "function", function: {name: "f", arguments: {x: "y"}}};
  assert.equal(ToolCalls.describe([call])[0].arguments, '{\n  "x": "y"\n}');
});

test("render: a .tool-calls block holding a .tool-call per call, its name in the title and the arguments in a <pre>", () => {
  const blocks = ToolCalls.render([WEATHER]);
  assert.equal(blocks.className, "tool-calls");
  assert.equal(blocks.children.length, 1);
  const [title, args] = blocks.children[0].children;
  assert.equal(blocks.children[0].className, "tool-call");
  assert.equal(blocks.children[0].dataset.id, "call_1");
  assert.equal(title.textContent, "Tool call ");
  assert.deepEqual([title.children[0].tag, title.children[0].textContent], ["code", "get_weather"]);
  assert.deepEqual([args.tag, args.className], ["pre", "tool-call-arguments"]);
  assert.equal(args.textContent, JSON.stringify({city: "Paris", days: [1, 2]}, null, 2));
});
