"""Chat templates from hostile files fail with a TemplateError, within bounds on steps, size and memory.

The hostile templates are the fuzzer's (fuzz/mutators.py): escapes to Python internals, ranges and loops
too big to finish, and memory bombs. Normal templates still render exactly as transformers does
(test_chat_template.py).
"""
from __future__ import annotations

import tracemalloc

import pytest

from fuzz.mutators import HOSTILE_TEMPLATES
from pychat_wasm.chat import template_sandbox
from pychat_wasm.chat.template import CHATML_TEMPLATE, ChatTemplate
from pychat_wasm.errors import TemplateError

MESSAGES = [{"role": "user", "content": "Hi"}]
MEMORY_BOUND = 64 * 2 ** 20  # bytes a refused render may allocate at its peak


@pytest.mark.parametrize("source", HOSTILE_TEMPLATES)
def test_a_hostile_template_fails_typed_and_bounded(source):
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError):
            ChatTemplate(source).render(MESSAGES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("source, phrase", [
    ("{{ ''.__class__.__mro__ }}", "unsafe"),
    ("{{ cycler.__init__.__globals__ }}", "unsafe"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "steps"),
    ("{{ 'x' * 10**9 }}", "repeats a value"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "joins"),
    ("{{ '{:>999999999}'.format(1) }}", "field width"),
    ("{{ 9 ** (9 ** 9) }}", "too large a power"),
])
def test_each_bound_names_what_it_stopped(source, phrase):
    with pytest.raises(TemplateError, match=phrase):
        ChatTemplate(source).render(MESSAGES)


def test_the_step_bound_counts_loops_that_write_nothing(monkeypatch):
    """A loop without output gets no chance to be checked by its output: the step count stops it."""
    source = "{% for i in range(5000) %}{% endfor %}done"
    assert ChatTemplate(source).render(MESSAGES) == "done"
    monkeypatch.setattr(template_sandbox, "MAX_STEPS", 1000)
    with pytest.raises(TemplateError, match="more than 1000 steps"):
        ChatTemplate(source).render(MESSAGES)


def test_a_long_conversation_renders_within_the_bounds():
    """The bounds leave room for real chats: 200 turns of 2,000 characters in ChatML."""
    messages = [{"role": ("user", "assistant")[i % 2], "content": "word " * 400} for i in range(200)]
    text = ChatTemplate(CHATML_TEMPLATE).render(messages)
    assert text.count("<|im_start|>") == 201 and len(text) > 400_000
