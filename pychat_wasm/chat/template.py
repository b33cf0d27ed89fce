"""Chat templates: turn a list of messages into the prompt text a model was trained on.

A GGUF file may carry `tokenizer.chat_template`, a Jinja2 template written for HF transformers.
Templates in downloaded files are untrusted code, so they render in Jinja2's immutable sandbox
(no attribute writes, no access to Python internals) with bounds on steps, sizes and output
(template_sandbox.py). Files without a template get
a built-in fallback: Gemma's turn format for gemma-family models, ChatML for everything else.

    >>> t = ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="<|im_end|>")
    >>> t.render([{"role": "user", "content": "Hi"}])
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""
from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Dict, List, Optional

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.sandbox

from ..errors import TemplateError
from .template_sandbox import BoundedSandbox, bounded_filter, render_bounded

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma has no system role: the system prompt is folded into the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + ns.system + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% set ns.system = '' %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


# Conversations whose rendering shows whether a template writes tool calls and tool results itself (the marks
# appear in its output) or leaves them out or fails on them (api/tool_messages.py then uses a generic format).
# The id is 9 letters and digits, the only ids Mistral's templates accept.
PROBE_QUESTION = {"role": "user", "content": "What is the weather?"}
TOOL_CALL_PROBE = [PROBE_QUESTION, {"role": "assistant", "content": "", "tool_calls": [
    {"id": "probecall", "type": "function", "function": {"name": "probe_tool", "arguments": {"place": "probe_x"}}}]}]
TOOL_RESULT_PROBE = [PROBE_QUESTION, {"role": "assistant", "content": "Let me look."},
                     {"role": "tool", "tool_call_id": "probecall", "content": "probe_result"}]
PROBE_TOOLS = [{"type": "function", "function": {  # some templates need tools to render a call
    "name": "probe_tool", "description": "A probe.",
    "parameters": {"type": "object", "properties": {"place": {"type": "string"}}, "required": ["place"]}}}]


def _raise_exception(message: str) -> None:
    raise TemplateError("chat template error: %s" % message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(value: Any, indent: Optional[int] = None) -> str:
    """HF's `tojson`: keeps non-ASCII characters as they are (Jinja's built-in escapes them)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _environment() -> BoundedSandbox:
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = bounded_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    """The compiled template; compiling costs milliseconds, and a reload brings the same source again."""
    try:
        return _environment().from_string(source)
    except jinja2.TemplateError as exc:
        raise TemplateError("the chat template does not compile: %s" % exc) from None
    except (RecursionError, MemoryError) as exc:  # deeply nested expressions
        raise TemplateError("the chat template does not compile: %s" % type(exc).__name__) from None


class ChatTemplate:
    """A compiled chat template plus the special-token texts it refers to."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "", builtin: Optional[str] = None):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.builtin = builtin  # name of the fallback in use, or None for the file's own template
        self._template = _compile(source)

    @classmethod
    def from_gguf(cls, gguf_file: Any, tokenizer: Any) -> "ChatTemplate":
        """The file's own template, or the built-in one that fits its architecture."""
        def text(token_id: Optional[int]) -> str:
            return tokenizer.token_text(token_id) if token_id is not None else ""

        bos, eos = text(tokenizer.bos_id), text(tokenizer.eos_id)
        source = gguf_file.metadata.get("tokenizer.chat_template")
        if isinstance(source, str) and source.strip():
            return cls(source, bos, eos)
        arch = str(gguf_file.metadata.get("general.architecture", ""))
        if arch.startswith("gemma"):
            return cls(GEMMA_TEMPLATE, bos, eos, builtin="gemma")
        return cls(CHATML_TEMPLATE, bos, eos, builtin="chatml")

    @functools.cached_property
    def reads_tools(self) -> bool:
        """Whether the template reads the `tools` variable (transformers' function list) at all."""
        return "tools" in jinja2.meta.find_undeclared_variables(_environment().parse(self.source))

    @functools.cached_property
    def renders_tool_calls(self) -> bool:
        """Whether the template writes an assistant message's tool_calls (name and arguments) itself."""
        return self._shows(TOOL_CALL_PROBE, ("probe_tool", "probe_x"))

    @functools.cached_property
    def renders_tool_results(self) -> bool:
        """Whether the template writes a "tool" message's content itself."""
        return self._shows(TOOL_RESULT_PROBE, ("probe_result",))

    def _shows(self, messages: List[Dict[str, Any]], marks: tuple) -> bool:
        try:
            text = self.render(messages, add_generation_prompt=False, tools=PROBE_TOOLS)
        except TemplateError:
            return False
        return all(mark in text for mark in marks)

    def render(self, messages: List[Dict[str, Any]], add_generation_prompt: bool = True,
               tools: Optional[list] = None, **extra: Any) -> str:
        """Render `messages` ([{"role": ..., "content": ...}]) to prompt text."""
        try:
            return render_bounded(self._template, dict(
                extra, messages=messages, add_generation_prompt=add_generation_prompt, tools=tools,
                bos_token=self.bos_token, eos_token=self.eos_token))
        except TemplateError:
            raise
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError("the chat template tried something unsafe: %s" % exc) from None
        except Exception as exc:  # a template is a program: any error in it is a template error
            raise TemplateError("the chat template failed: %s: %s" % (type(exc).__name__, exc)) from None


def encode_chat(tokenizer: Any, text: str) -> List[int]:
    """Token ids of rendered chat text, adding BOS only when the template did not write it already.

    Templates such as Gemma's start with `{{ bos_token }}` while the tokenizer also wants to add BOS;
    adding it twice degrades answers. EOS is never appended: the model is to continue the text.
    """
    ids = tokenizer.encode(text, add_special=False, parse_special=True)
    bos = tokenizer.bos_id
    if tokenizer.add_bos and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids
