"""Function calling for the library API: OpenAI's `tools` and `tool_choice` on create_chat_completion.

The functions are shown to the model by a generic system prompt (TOOLS_PROMPT, before the conversation's own
system message): their name, description and parameters schema, one JSON object a line, and the rule that a
call is an answer that is only {"name": ..., "arguments": {...}}.
    tool_choice "none"      the tools are not shown; a plain answer
    tool_choice "auto"      (the default with tools) shown; an answer that is such an object (name first, naming
                            one of the functions) becomes a tool call, any other answer stays content
    tool_choice "required"  shown, and the answer is constrained (a grammar from the parameters schemas) to a
                            call of one of them; {"type": "function", "function": {"name": N}}: a call of N
A tool call is the message's tool_calls ([{id, type: function, function: {name, arguments: a JSON text}}]),
content None, finish_reason "tool_calls"; the arguments text is the model's own text of the object.

Streamed (CallReader), as OpenAI streams calls: once the answer's text so far is `{"name": "N", "arguments": `
a delta carries tool_calls [{index: 0, id, type, function: {name: N, arguments: ""}}], then deltas carry
function.arguments fragments as they are written (the closing brace held back until it is known to close
the call). With "auto", an answer that starts with "{" is held back until it is known to be a call or not.
The non-streamed answer is the same deltas put together. A conversation's earlier tool calls and tool results
are rendered by tool_messages.py.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from . import shapes
from ..errors import GrammarError, InvalidRequestError
from ..grammar import schema_to_gbnf

TOOLS_PROMPT = ("You can call these functions (one JSON object a line: name, description, parameters schema):\n"
                "%s\nTo call a function, answer with only a JSON object {\"name\": the function's name, "
                "\"arguments\": an object of its parameters}. A function's result comes back as "
                "{\"name\": the function's name, \"result\": what it returned}. Otherwise answer the user normally.")
# up to the first character of the arguments
CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\S)')
CALL_TAIL = re.compile(r'\s*(?:\}\s*)?$')  # what may be (the start of) the call's closing brace


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

    def reader(self) -> "CallReader":
        return CallReader(self.functions if self.shown else {}, incremental=self.required is not None)


class CallReader:
    """An answer's text pieces as chat deltas: content, or one tool call of `functions` (see the module
    docstring). incremental: the answer is a call (a grammar makes it one), so nothing is held back for long."""

    def __init__(self, functions: Dict[str, Any], incremental: bool = False):
        self.functions, self.incremental = functions, incremental
        self.text = ""
        self.mode = "content" if not functions else None  # None: not known yet; "content" or "call"
        self.head = 0  # call: where the arguments start in text
        self.sent = 0  # how much of text (content) or of the arguments (call) was handed out
        self.call_id: Optional[str] = None

    @property
    def is_call(self) -> bool:
        return self.mode == "call"

    @property
    def may_call(self) -> bool:
        """Whether the answer may still turn out to be a call."""
        return self.mode is None

    def feed(self, piece: str) -> List[Dict[str, Any]]:
        self.text += piece
        if self.mode is None:
            self._decide()
        return self._deltas(final=False)

    def finish(self) -> List[Dict[str, Any]]:
        """The deltas still held back once the answer is over."""
        if self.mode is None:
            self._decide(final=True)
        return self._deltas(final=True)

    def _decide(self, final: bool = False) -> None:
        start = self.text.lstrip()
        head = CALL_HEAD.match(self.text)
        name = json.loads(head.group(1)) if head else None
        if name in self.functions and (self.incremental or (final and self._complete_call(head.end()))):
            self.mode, self.head = "call", head.end()
        elif (start and not start.startswith("{")) or final:
            self.mode = "content"

    def _complete_call(self, head: int) -> bool:
        """Whether the text is a whole call: the arguments an object, then the closing brace."""
        tail = CALL_TAIL.search(self.text, head)
        try:
            return "}" in tail.group() and isinstance(json.loads(self.text[head:tail.start()]), dict)
        except ValueError:
            return False

    def _deltas(self, final: bool) -> List[Dict[str, Any]]:
        if self.mode == "content":
            fresh, self.sent = self.text[self.sent:], len(self.text)
            return [{"content": fresh}] if fresh else []
        if self.mode != "call":
            return []
        deltas = []
        if self.call_id is None:
            self.call_id = shapes.new_id("call")
            name = json.loads(CALL_HEAD.match(self.text).group(1))
            deltas.append(_call_delta({"id": self.call_id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}))
        arguments = self.text[self.head:]
        tail = CALL_TAIL.search(arguments)
        end = tail.start() if not final or "}" in tail.group() else len(arguments.rstrip())
        if end > self.sent:
            deltas.append(_call_delta({"function": {"arguments": arguments[self.sent:end]}}))
            self.sent = end
        return deltas


def _call_delta(call: Dict[str, Any]) -> Dict[str, Any]:
    return {"tool_calls": [dict(index=0, **call)]}
