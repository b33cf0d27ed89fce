/*
 * tool_calls.js: an assistant message's tool calls (OpenAI's `tool_calls`) shown as such: one block per call
 * with the function's name and its arguments pretty-printed, not as the text the model wrote. Arguments that
 * are no JSON (a model may write anything) are shown as written. Everything goes in as textContent.
 *
 *     Pychat.ToolCalls.describe([{id: "call_1", type: "function",
 *                                 function: {name: "get_weather", arguments: '{"city":"Paris"}'}}])
 *         // [{id: "call_1", name: "get_weather", arguments: '{\n  "city": "Paris"\n}'}]
 *     element.append(Pychat.ToolCalls.render(toolCalls));   // <div class="tool-calls"> (page_ui.js's element)
 */
(function (Pychat) {
  "use strict";

  /* Each call's id, function name and arguments as indented JSON (as written when they are no JSON). */
  function describe(toolCalls) {
    return (toolCalls || []).map((call) => {
      const fn = (call && call.function) || {};
      const written = typeof fn.arguments === "string" ? fn.arguments : JSON.stringify(fn.arguments ?? {});
      let args = written;
      try {
        args = JSON.stringify(JSON.parse(written), null, 2);
      } catch (error) { /* no JSON: shown as the model wrote it */ }
      return {id: (call && call.id) || "", name: typeof fn.name === "string" && fn.name ? fn.name : "(no name)",
              arguments: args};
    });
  }

  /* <div class="tool-calls"> holding a <div class="tool-call"> per call: "Tool call" and the name, then a <pre>. */
  function render(toolCalls) {
    const {element} = Pychat.PageUI;  // page_ui.js
    const blocks = element("div", undefined, "tool-calls");
    for (const call of describe(toolCalls)) {
      const block = element("div", undefined, "tool-call");
      block.dataset.id = call.id;
      const title = element("div", "Tool call ", "tool-call-title");
      title.appendChild(element("code", call.name, "tool-call-name"));
      block.append(title, element("pre", call.arguments, "tool-call-arguments"));
      blocks.appendChild(block);
    }
    return blocks;
  }

  Object.assign(Pychat, {ToolCalls: {describe, render}});
})(self.Pychat = self.Pychat || {});
