"""Function calling for the library API: OpenAI's `tools` and `tool_choice` on create_chat_completion.

The functions are shown to the model by a generic system prompt (TOOLS_PROMPT, before the conversation's own
system message): their name, description and parameters schema, one JSON object a line, and the rule that a
call is an answer that is only {"name": ..., "arguments": {...}}.
    tool_choice "none"      the tools are not shown; a plain answer
    tool_choice "auto"      (the default with tools) shown; an answer that is such an object, naming a function
                            and with an arguments object, becomes a tool call, any other answer stays content
    tool_choice "required"  shown, and the answer is constrained (a grammar from the parameters schemas) to a
                            call of one of them; {"type": "function", "function": {"name": N}}: a call of N
A tool call is the message's tool_calls ([{id, type: function, function: {name, arguments: a JSON text}}]),
content None, finish_reason "tool_calls". Not streamed (stream=True with tools is refused); a conversation's
earlier tool calls and tool results (role "tool") are not taken yet.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from . import shapes
from ..errors import GrammarError, InvalidRequestError
from ..grammar import schema_to_gbnf

TOOLS_PROMPT = ("You can call these functions (one JSON object a line: name, description, parameters schema):\n"
                "%s\nTo call a function, answer with only a JSON object {\"name\": the function's name, "
                "\"arguments\": an object of its parameters}. Otherwise answer the user normally.")


class ToolPlan:
    """One call's functions (name -> OpenAI function object) and which call, if any, is required."""

    def __init__(self, tools: Any, tool_choice: Any):
        if not isinstance(tools, list) or not tools:
            raise InvalidRequestError("tools must be a non-empty list of {type: function, function} objects",
                                      "tools")
        self.functions: Dict[str, Dict[str, Any]] = {}
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise InvalidRequestError("tools[%d] must be {type: function, function: {name, ...}}" % i, "tools")
            self.functions[function["name"]] = function
        self.required: Optional[List[str]] = None  # the functions one of which must be called
        self.shown = tool_choice != "none"
        if tool_choice == "required":
            self.required = list(self.functions)
        elif isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
            name = (tool_choice.get("function") or {}).get("name")
            if name not in self.functions:
                raise InvalidRequestError("tool_choice names %r, which is not among the tools" % (name,),
                                          "tool_choice")
            self.required = [name]
        elif tool_choice not in (None, "auto", "none"):
            raise InvalidRequestError("tool_choice must be none, auto, required or {type: function, function: "
                                      "{name}}, not %r" % (tool_choice,), "tool_choice")

    def messages(self, conversation: List[Dict[str, str]]) -> List[Dict[str, str]]:
        """The conversation with the functions shown in its system message."""
        if not self.shown:
            return conversation
        lines = "\n".join(json.dumps({key: function[key] for key in ("name", "description", "parameters")
                                      if key in function}) for function in self.functions.values())
        prompt = TOOLS_PROMPT % lines
        if conversation and conversation[0].get("role") == "system":
            return [{"role": "system", "content": prompt + "\n\n" + str(conversation[0]["content"])}] + conversation[1:]
        return [{"role": "system", "content": prompt}] + conversation

    def gbnf(self) -> Optional[str]:
        """The grammar of a call of a required function, or None."""
        if self.required is None:
            return None
        calls = [{"type": "object", "properties": {
            "name": {"const": name},
            "arguments": self.functions[name].get("parameters") or {"type": "object", "properties": {}}},
            "required": ["name", "arguments"], "additionalProperties": False} for name in self.required]
        try:
            return schema_to_gbnf(calls[0] if len(calls) == 1 else {"anyOf": calls})
        except GrammarError as exc:
            raise InvalidRequestError("tools: a function's parameters schema cannot constrain output: %s" % exc,
                                      "tools") from None

    def shaped(self, response: Dict[str, Any]) -> Dict[str, Any]:
        """The chat.completion with its answer as a tool call, when it is one."""
        choice = response["choices"][0]
        call = self.parse(choice["message"]["content"]) if self.shown else None
        if call is not None:
            choice["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice["finish_reason"] = "tool_calls"
        return response

    def parse(self, text: str) -> Optional[Dict[str, Any]]:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not (isinstance(value, dict) and value.get("name") in self.functions
                and isinstance(value.get("arguments"), dict)):
            return None
        return {"id": shapes.new_id("call"), "type": "function",
                "function": {"name": value["name"], "arguments": json.dumps(value["arguments"])}}
