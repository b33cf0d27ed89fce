"""Function calling for the library API: OpenAI's `tools` and `tool_choice` on create_chat_completion.

The functions are shown to the model through its chat template when the template renders `tools` and writes
calls in a format of tool_formats.py (Qwen 2.5 / Qwen3 / Hermes, Llama 3.x, Mistral): the template gets the
`tools` list as transformers passes it, and the answer is read in that format. Any other template (SmolLM2's,
Gemma's, the built-in ones) gets a generic system prompt (TOOLS_PROMPT, before the conversation's own system
message): the functions' name, description and parameters schema, one JSON object a line, and the rule that a
call is an answer that is only {"name": ..., "arguments": {...}}.
    tool_choice "none"      the tools are not shown; a plain answer
    tool_choice "auto"      (the default with tools) shown; a call written in the format (the generic one: the
                            whole answer such an object, name first, naming one of the functions) becomes a
                            tool call, any other answer stays content
    tool_choice "required"  shown, and the answer is constrained (a grammar of the format around the parameters
                            schemas) to a call of one of them; {"type": "function", "function": {"name": N}}: a
                            call of N
Tool calls are the message's tool_calls ([{id, type: function, function: {name, arguments: a JSON text}}]),
finish_reason "tool_calls"; content is None unless the model wrote text before (or after) its calls; the
arguments text is the model's own text of the object.

Streamed (CallReader), as OpenAI streams calls: once a call's head is read (`{"name": "N", "arguments": `) a
delta carries tool_calls [{index, id, type: function, function: {name: N, arguments: ""}}], then deltas carry
function.arguments fragments as they are written (up to the brace that closes the arguments). With "auto",
an answer in a format without an opening mark (generic, Llama's) that starts with "{" is held back until it
is known to be a call or not; in a format with one (<tool_call>, [TOOL_CALLS]) text before the mark streams
as content and a call is taken once its object is complete. The non-streamed answer is the same deltas put
together. A conversation's earlier tool calls and tool results are rendered by tool_messages.py.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any, Dict, List, Optional, Tuple

from . import shapes
from .tool_formats import GENERIC, ToolFormat, read_answer
from ..errors import GrammarError, InvalidRequestError
from ..grammar import schema_to_gbnf
from ..grammar.json_patterns import gbnf_literal

TOOLS_PROMPT = ("You can call these functions (one JSON object a line: name, description, parameters schema):\n"
                "%s\nTo call a function, answer with only a JSON object {\"name\": the function's name, "
                "\"arguments\": an object of its parameters}. A function's result comes back as "
                "{\"name\": the function's name, \"result\": what it returned}. Otherwise answer the user normally.")


class ToolPlan:
    """One call's functions (name -> OpenAI function object), which call, if any, is required, and the format
    (tool_formats.py) the model's template shows them in and reads its calls in."""

    def __init__(self, tools: Any, tool_choice: Any, fmt: ToolFormat = GENERIC):
        if not isinstance(tools, list) or not tools:
            raise InvalidRequestError("tools must be a non-empty list of {type: function, function} objects",
                                      "tools")
        self.fmt = fmt
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

    def template_tools(self) -> Optional[List[Dict[str, Any]]]:
        """The `tools` the chat template renders (OpenAI's list, as transformers passes it), or None."""
        if not self.shown or self.fmt is GENERIC:
            return None
        return [{"type": "function", "function": function} for function in self.functions.values()]

    def messages(self, conversation: List[Dict[str, str]]) -> List[Dict[str, str]]:
        """The conversation with the functions shown in its system message (the generic format's prompt)."""
        if not self.shown or self.fmt is not GENERIC:
            return conversation
        lines = "\n".join(json.dumps({key: function[key] for key in ("name", "description", "parameters")
                                      if key in function}) for function in self.functions.values())
        prompt = TOOLS_PROMPT % lines
        if conversation and conversation[0].get("role") == "system":
            return [{"role": "system", "content": prompt + "\n\n" + str(conversation[0]["content"])}] + conversation[1:]
        return [{"role": "system", "content": prompt}] + conversation

    def gbnf(self, tokenizer: Any = None) -> Optional[str]:
        """The grammar of a call of a required function written in the format, or None. A mark that is one
        special token of `tokenizer` (Qwen's <tool_call>) is that token, as the model writes it."""
        if self.required is None:
            return None
        key, ids = self.fmt.arguments_key, self.fmt.id_length
        the_id = {"id": {"type": "string", "pattern": "^[a-zA-Z0-9]{%d}$" % ids}} if ids else {}  # as Mistral writes
        calls = [{"type": "object", "properties": {
            "name": {"const": name},
            key: self.functions[name].get("parameters") or {"type": "object", "properties": {}}, **the_id},
            "required": ["name", key, *the_id], "additionalProperties": False} for name in self.required]
        try:
            call = schema_to_gbnf(calls[0] if len(calls) == 1 else {"anyOf": calls})
        except GrammarError as exc:
            raise InvalidRequestError("tools: a function's parameters schema cannot constrain output: %s" % exc,
                                      "tools") from None
        spacing = [gbnf_literal(self.fmt.spacing)] if self.fmt.spacing else []
        marks = [_mark(literal, tokenizer) for literal in self.fmt.opens]
        ends = [_mark(literal, tokenizer) for literal in self.fmt.closes]
        root = " ".join(marks + spacing * bool(marks) + ["tool-call"] + spacing * bool(ends) + ends)
        return re.sub(r"(?m)^root ::= ", "tool-call ::= ", call) + "root ::= %s\n" % root

    def reader(self) -> "CallReader":
        return CallReader(self.functions if self.shown else {}, self.required is not None, self.fmt)


def _mark(literal: str, tokenizer: Any) -> str:
    """A format's literal in GBNF: the token itself where the vocabulary has it as one special token."""
    if tokenizer is not None:
        ids = tokenizer.encode(literal, add_special=False, parse_special=True)
        if len(ids) == 1 and tokenizer.is_special(ids[0]):
            return "<[%d]>" % ids[0]
    return gbnf_literal(literal)


class CallReader:
    """An answer's text pieces as chat deltas: content, and the tool calls of `functions` written in `fmt` (see
    the module docstring). incremental: the answer is a call (a grammar makes it one), so nothing is held back
    for long."""

    def __init__(self, functions: Dict[str, Any], incremental: bool = False, fmt: ToolFormat = GENERIC):
        self.functions, self.incremental, self.fmt = functions, incremental, fmt
        self.text = ""
        self.mode = "content" if not functions else None  # None: not known yet; "content" or "call"
        self.sent = 0  # how much of text went out as content
        self.calls: List[Tuple[str, int]] = []  # per call announced: its id, how much of its arguments went out

    @property
    def is_call(self) -> bool:
        return self.mode == "call"

    @property
    def may_call(self) -> bool:
        """Whether the answer may still turn out to be a call."""
        return self.mode is None

    def feed(self, piece: str) -> List[Dict[str, Any]]:
        self.text += piece
        return self._deltas(final=False)

    def finish(self) -> List[Dict[str, Any]]:
        """The deltas still held back once the answer is over."""
        return self._deltas(final=True)

    def _deltas(self, final: bool) -> List[Dict[str, Any]]:
        if self.mode == "content":
            return self._content(len(self.text))
        reading = read_answer(self.fmt, self.text, self.functions)
        first = reading.calls[0] if reading.calls else None
        if self.mode is None:
            whole = not self.text[reading.rest:].strip()  # nothing after the calls: needed without opening marks
            if first is not None and (self.incremental or first.closed and (self.fmt.opens or final and whole)):
                self.mode = "call"
            elif final or (reading.broken and not self.fmt.opens):
                self.mode = "content"
                return self._content(len(self.text))
        deltas = self._content(reading.content_end) if self.fmt.opens or self.mode == "call" else []
        if self.mode != "call":
            return deltas
        for index, call in enumerate(reading.calls):
            if index == len(self.calls):
                self.calls.append((self._new_id(), 0))
                deltas.append(_call_delta(index, {"id": self.calls[index][0], "type": "function",
                                                  "function": {"name": call.name, "arguments": ""}}))
            ident, sent = self.calls[index]
            end = len(self.text) if call.end is None else call.end
            if end > call.start + sent:
                deltas.append(_call_delta(index, {"function": {"arguments": self.text[call.start + sent:end]}}))
                self.calls[index] = (ident, end - call.start)
        if final and reading.calls[-1].closed and self.text[reading.rest:].strip():
            deltas.append({"content": self.text[reading.rest:].strip()})  # text after the calls
        return deltas

    def _content(self, end: int) -> List[Dict[str, Any]]:
        fresh, self.sent = self.text[self.sent:end], max(self.sent, end)
        return [{"content": fresh}] if fresh else []

    def _new_id(self) -> str:
        if self.fmt.id_length:  # a template that insists on ids of its own shape (Mistral: 9 letters and digits)
            return uuid.uuid4().hex[:self.fmt.id_length]
        return shapes.new_id("call")


def _call_delta(index: int, call: Dict[str, Any]) -> Dict[str, Any]:
    return {"tool_calls": [dict(index=index, **call)]}
