/*
 * web/response_format.js: the Settings dialog's Response format (Text / JSON / JSON Schema) and Tools editors,
 * against OpenAI's request shapes: response_format {type: "json_object"} or {type: "json_schema", json_schema:
 * {name, schema, strict: true}} (null for free text), tools [{type: "function", function: {name, ...}}] (null
 * for none). What cannot be sent is an {error} that says what is wrong. The e2e test checks the page's
 * values with the openai Python package's own types (tests/browser/test_e2e_settings.py).
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import {loadWebScripts, plain} from "./web_scripts.mjs";

const {ResponseFormat} = loadWebScripts(["response_format.js"]).Pychat;
const check = (kind, text) => plain(ResponseFormat.check(kind, text));
const tools = (text) => plain(ResponseFormat.checkTools(text));

const PERSON = {type: "object", properties: {name: {type: "string"}, age: {type: "integer"}}, required: ["name"]};

test("Text is no response_format, JSON any object, JSON Schema the schema typed (strict)", () => {
  assert.deepEqual(check("text", "not even JSON"), {value: null});
  assert.deepEqual(check("json_object", ""), {value: {type: "json_object"}});
  assert.deepEqual(check("json_schema", JSON.stringify(PERSON, null, 2)),
                   {value: {type: "json_schema", json_schema: {name: "response", schema: PERSON, strict: true}}});
});

test("a schema that is no JSON, or no object, is an error saying so", () => {
  const broken = check("json_schema", '{"type": "object",').error;
  assert.match(broken, /^The JSON Schema is not valid JSON: /);
  assert.equal(check("json_schema", "[1, 2]").error, "The JSON Schema must be an object {...}, not an array.");
  assert.equal(check("json_schema", '"object"').error, "The JSON Schema must be an object {...}, not a string.");
  assert.equal(check("json_schema", "null").error, "The JSON Schema must be an object {...}, not null.");
  assert.match(check("json_schema", "  \n").error, /^Write the JSON Schema the answer must follow/);
  assert.equal(check("yaml", "{}").error, 'Unknown response format "yaml"');
});

test("tools: empty is none; an array of function tools is sent as typed", () => {
  assert.deepEqual(tools(" \n"), {value: null});
  const weather = [{type: "function", function: {name: "get_weather", description: "The weather",
                                                  parameters: {type: "object", properties: {city: {type: "string"}}}}},
                   {type: "function", function: {name: "get_time"}}];
  assert.deepEqual(tools(JSON.stringify(weather)), {value: weather});
});

test("tools that are no JSON, no array, or hold something else than function tools, name what is wrong", () => {
  assert.match(tools("[{").error, /^Tools is not valid JSON: /);
  assert.match(tools('{"type": "function"}').error, /^Tools must be a non-empty array/);
  assert.match(tools("[]").error, /^Tools must be a non-empty array/);
  const fn = (f, type = "function") => JSON.stringify([{type: "function", function: {name: "ok"}}, {type, function: f}]);
  assert.match(tools(fn({name: "x"}, "retrieval")).error, /^Tool 2 must be \{"type": "function"/);
  assert.match(tools(fn({description: "no name"})).error, /^Tool 2 must be/);
  assert.equal(tools(fn({name: "x", parameters: []})).error, "Tool 2 (x): its parameters must be a JSON Schema object.");
});
