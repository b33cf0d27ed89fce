"""How a model writes tool calls: one row per format its chat template was trained on, recognised from the
template itself, read back from an answer (the text so far, for streaming) and written by a grammar.

    format       an answer that calls functions                                    templates (llama.cpp's names)
    hermes       text?  <tool_call>\\n{"name": N, "arguments": {...}}\\n</tool_call>  Qwen 2.5, Qwen3, Hermes 2 Pro
                        (one such block per call)                                  and 3, QwQ, SmolLM3, MiMo-VL
    mistral      text?  [TOOL_CALLS][{"name": N, "arguments": {...}, "id": I}, ...]  Mistral Nemo, Small 3.x
    llama3_json  {"name": N, "parameters": {...}}   (the whole answer, one call)   Llama 3.1, 3.2, 3.3
    generic      {"name": N, "arguments": {...}}    (the whole answer, one call)   any other (tools.py's prompt)

A template is native when it reads the `tools` variable (Jinja's find_undeclared_variables, ChatTemplate
.reads_tools) and one format reads back the call it writes itself: a probe conversation ending in an
assistant call of probe_tool is rendered, and the answer part (after the prompt, before the end of the turn)
must read as exactly that call. Anything else uses the generic format and tools.py's prompt.

Reading is whitespace-tolerant around the literals and inside the JSON; a call's arguments are the model's
own text of the object. Mistral's template insists on ids of 9 letters and digits, so its calls get such ids.
"""
from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from ..chat.template import PROBE_QUESTION, PROBE_TOOLS, TOOL_CALL_PROBE
from ..errors import TemplateError

INCOMPLETE, MISMATCH = -1, -2  # what reading a literal or a JSON value may give instead of where it ends


@dataclass(frozen=True)
class ToolFormat:
    name: str
    opens: Tuple[str, ...] = ()  # literals before the first call; without them the answer is only the call
    between: Optional[Tuple[str, ...]] = None  # literals between two calls; None: one call an answer
    closes: Tuple[str, ...] = ()  # literals after the last call
    spacing: str = ""  # what the template writes between the literals and a call object
    arguments_key: str = "arguments"
    id_length: Optional[int] = None  # the template's tool call ids: this many letters and digits

    def head(self) -> "re.Pattern[str]":
        """A call object up to the first character of its arguments: group 1 is the name as a JSON string."""
        return _head(self.arguments_key)


@functools.lru_cache(maxsize=None)
def _head(key: str) -> "re.Pattern[str]":
    return re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"%s"\s*:\s*(?=\{)' % key)


GENERIC = ToolFormat("generic")
FORMATS = (
    ToolFormat("hermes", opens=("<tool_call>",), between=("</tool_call>", "<tool_call>"), closes=("</tool_call>",),
               spacing="\n"),
    ToolFormat("mistral", opens=("[TOOL_CALLS]", "["), between=(",",), closes=("]",), id_length=9),
    ToolFormat("llama3_json", arguments_key="parameters"),
)


@dataclass
class CallSpan:
    """One call in an answer: its name and where its arguments are (end None: not written to the end yet)."""
    name: str
    start: int
    end: Optional[int] = None
    closed: bool = False  # the call object's closing brace was read


@dataclass
class Reading:
    """An answer's text read in a format: text[:content_end] is content before the calls; text[rest:] comes
    after the calls read (content, if the answer ends there); broken: text[rest:] cannot be a call."""
    content_end: int
    calls: List[CallSpan] = field(default_factory=list)
    rest: int = 0
    broken: bool = False


def read_answer(fmt: ToolFormat, text: str, names: Any) -> Reading:
    """`text` (an answer so far) read as content and calls of functions in `names`, in format `fmt`.

    >>> r = read_answer(FORMATS[0], 'Sure.\\n<tool_call>\\n{"name": "f", "arguments": {"a": 1}}\\n</tool_call>', {"f"})
    >>> r.content_end, [(c.name, c.start, c.end, c.closed) for c in r.calls]
    (5, [('f', 45, 53, True)])
    """
    if fmt.opens:
        first = text.find(fmt.opens[0])
        if first < 0:
            return Reading(len(text) - _held_back(text, fmt.opens[0]), rest=len(text), broken=True)
        reading = Reading(len(text[:first].rstrip()))
        pos = _literals(text, first, fmt.opens)
    else:
        reading, pos = Reading(0), 0
    while pos >= 0:
        reading.rest = pos
        head = fmt.head().match(text, pos)
        if head is None or json.loads(head.group(1)) not in names:
            reading.broken = head is not None or bool(text[pos:].strip()) and not text[pos:].lstrip().startswith("{")
            return reading
        call = CallSpan(json.loads(head.group(1)), head.end())
        reading.calls.append(call)
        end = json_value_end(text, call.start)
        if end < 0:
            return reading
        call.end = end
        pos = _rest_of_object(text, end)
        if pos < 0:
            return reading
        call.closed = True
        reading.rest = pos
        following = _literals(text, pos, fmt.between) if fmt.between else MISMATCH
        if following < 0:
            closed = _literals(text, pos, fmt.closes)
            reading.rest = closed if closed >= 0 else pos
            return reading
        pos = following
    return reading


def _held_back(text: str, marker: str) -> int:
    """How many characters at the end of text may start `marker` (with the whitespace before them)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return len(text) - len(text[:-n].rstrip())
    return len(text) - len(text.rstrip())


def _literals(text: str, pos: int, literals: Tuple[str, ...]) -> int:
    """Where `literals` (whitespace allowed before each) end in text from pos, or INCOMPLETE / MISMATCH."""
    for literal in literals:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if text.startswith(literal, pos):
            pos += len(literal)
        elif literal.startswith(text[pos:]):
            return INCOMPLETE
        else:
            return MISMATCH
    return pos


def json_value_end(text: str, pos: int) -> int:
    """Where the JSON object or array starting at text[pos] ends, or INCOMPLETE (MISMATCH: not valid JSON).

    >>> json_value_end('{"a": "}"} tail', 0), json_value_end('{"a": [1', 0)
    (10, -1)
    """
    depth, in_string, escaped = 0, False, False
    for i in range(pos, len(text)):
        c = text[i]
        if in_string:
            in_string, escaped = (not (c == '"' and not escaped)), (c == "\\" and not escaped)
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                try:
                    json.loads(text[pos:i + 1])
                except ValueError:
                    return MISMATCH
                return i + 1
    return INCOMPLETE


MEMBER = re.compile(r'\s*,\s*"(?:[^"\\]|\\.)*"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null)')


def _rest_of_object(text: str, pos: int) -> int:
    """After a call's arguments: other simple members (Mistral's "id"), then the closing brace."""
    member = MEMBER.match(text, pos)
    while member is not None and member.end() < len(text):
        pos = member.end()
        member = MEMBER.match(text, pos)
    return _literals(text, pos, ("}",))


# ---- which format a template writes ---------------------------------------------------------------------

PROBE_CONTENT = "probe_content"


def template_format(template: Any) -> ToolFormat:
    """The format `template` (a ChatTemplate) renders tool calls in, or GENERIC (see the module docstring)."""
    return _template_format(template) if template.builtin is None else GENERIC


@functools.lru_cache(maxsize=8)
def _template_format(template: Any) -> ToolFormat:
    if not (template.reads_tools and template.renders_tool_calls):
        return GENERIC
    try:
        prompt = template.render([PROBE_QUESTION], add_generation_prompt=True, tools=PROBE_TOOLS)
        written = template.render(TOOL_CALL_PROBE, add_generation_prompt=False, tools=PROBE_TOOLS)
        plain = template.render([PROBE_QUESTION, {"role": "assistant", "content": PROBE_CONTENT}],
                                add_generation_prompt=False, tools=PROBE_TOOLS)
    except TemplateError:
        return GENERIC
    end_of_turn = plain[plain.rfind(PROBE_CONTENT) + len(PROBE_CONTENT):] if PROBE_CONTENT in plain else ""
    # where the answer starts: QwQ's prompt opens a <think> its rendered turns lack
    answer = written[len(os.path.commonprefix([prompt, written, plain])):]
    answer = answer[:len(answer) - len(end_of_turn)] if end_of_turn and answer.endswith(end_of_turn) else answer
    for fmt in FORMATS:
        reading = read_answer(fmt, answer, {"probe_tool"})
        calls = reading.calls
        if (len(calls) == 1 and calls[0].closed and not answer[reading.rest:].strip()
                and json.loads(answer[calls[0].start:calls[0].end]) == {"place": "probe_x"}):
            return fmt
    return GENERIC

