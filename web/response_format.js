/*
 * response_format.js: the Settings dialog's "Response format" group: Text, JSON (any object) or JSON Schema (a
 * schema typed in its editor), and the optional Tools editor (a JSON array of OpenAI function tools). Both
 * editors are checked as you type and say what is wrong; what is typed is saved as typed, so nothing is lost.
 * The engine checks the rest (a schema it cannot turn into a grammar, pychat_wasm/api/structured.py; tools,
 * pychat_wasm/api/tools.py) and says why.
 *
 * The checks are pure functions, also run under Node (tests/unit/js/response_format.test.mjs):
 *
 *     Pychat.ResponseFormat.check("json_schema", '{"type": "object"}')
 *         // {value: {type: "json_schema", json_schema: {name: "response", schema: {type: "object"}, strict: true}}}
 *     Pychat.ResponseFormat.check("json_schema", "[1]")   // {error: "The JSON Schema must be an object {...}, ..."}
 *     Pychat.ResponseFormat.check("text", "")             // {value: null}: free text, as leaving it out
 *     Pychat.ResponseFormat.checkTools("")                 // {value: null}: no tools
 *
 * The editor (the DOM part) is the SamplingForm's (sampling_form.js): form.responseFormat(), form.tools().
 */
(function (Pychat) {
  "use strict";

  const SCHEMA_NAME = "response";  // OpenAI's json_schema.name: the page has one schema at a time
  const KINDS = ["text", "json_object", "json_schema"];

  /* JSON.parse with a message that says where: {value} or {error}. */
  function parseJSON(text, what) {
    try {
      return {value: JSON.parse(text)};
    } catch (error) {
      return {error: `${what} is not valid JSON: ${error.message}`};
    }
  }

  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  const kindOf = (value) => (value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`);

  /* The response_format for `kind` ("text" | "json_object" | "json_schema") and the schema editor's text:
   * {value: null | {type: "json_object"} | {type: "json_schema", json_schema: {name, schema, strict: true}}}, or
   * {error: what is wrong with the schema}. */
  function check(kind, schemaText) {
    if (!KINDS.includes(kind)) return {error: `Unknown response format ${JSON.stringify(kind)}`};
    if (kind === "text") return {value: null};
    if (kind === "json_object") return {value: {type: "json_object"}};
    if (!schemaText.trim()) return {error: 'Write the JSON Schema the answer must follow, e.g. {"type": "object"}.'};
    const parsed = parseJSON(schemaText, "The JSON Schema");
    if (parsed.error) return parsed;
    if (!isObject(parsed.value)) {
      return {error: `The JSON Schema must be an object {...}, not ${kindOf(parsed.value)}.`};
    }
    return {value: {type: "json_schema", json_schema: {name: SCHEMA_NAME, schema: parsed.value, strict: true}}};
  }

  /* The Tools editor's text: {value: null} when empty, {value: [tool, ...]} for an array of
   * {type: "function", function: {name, ...}}, else {error: which tool is wrong and how}. */
  function checkTools(text) {
    if (!text.trim()) return {value: null};
    const parsed = parseJSON(text, "Tools");
    if (parsed.error) return parsed;
    const tools = parsed.value;
    if (!Array.isArray(tools) || !tools.length) {
      return {error: 'Tools must be a non-empty array [{"type": "function", "function": {"name": ...}}, ...].'};
    }
    for (const [index, tool] of tools.entries()) {
      const fn = isObject(tool) ? tool.function : null;
      if (!isObject(tool) || tool.type !== "function" || !isObject(fn) || typeof fn.name !== "string" || !fn.name) {
        return {error: `Tool ${index + 1} must be {"type": "function", "function": {"name": "...", ...}}.`};
      }
      if (fn.parameters !== undefined && !isObject(fn.parameters)) {
        return {error: `Tool ${index + 1} (${fn.name}): its parameters must be a JSON Schema object.`};
      }
    }
    return {value: tools};
  }

  Object.assign(Pychat, {ResponseFormat: {check, checkTools, KINDS}});
})(self.Pychat = self.Pychat || {});
