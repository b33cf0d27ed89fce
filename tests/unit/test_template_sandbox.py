"""Chat templates from hostile files fail with a TemplateError, within bounds on steps, size and memory.

The hostile templates are the fuzzer's (fuzz/mutators.py): escapes to Python internals, ranges and loops
too big to finish, and memory bombs. Normal templates still render exactly as transformers does
(test_chat_template.py).
"""
from __future__ import annotations

import collections
import gc
import sys
import tracemalloc

import pytest

from fuzz.mutators import HOSTILE_TEMPLATES
from pychat_wasm.chat import template_sandbox
from pychat_wasm.chat.template import CHATML_TEMPLATE, ChatTemplate
from pychat_wasm.chat.template_sandbox import MAX_BUILT
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
    ("{{ ('\\t' * 1999500) | wordwrap(1) }}", "called wordwrap"),  # before textwrap spends its seconds
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


LINES = [{"role": "user", "content": "line\n" * 300}]
MANY = [{"role": ("user", "assistant")[i % 2], "content": "Hi"} for i in range(60)]
BIG = "{% set s = 'x' * 1000000 %}{% set l = [s] * 3 %}{% set ll = [l] * 1000 %}"


@pytest.mark.parametrize("source, messages", [
    ("{{ messages[0]['content'] | indent(3999999) }}", LINES),
    ("{{ messages[0]['content'] | indent('x' * 3999999) }}", LINES),
    ("{{ ('\\t' * 500).expandtabs(3999999) }}", MESSAGES),
    ("{{ messages | tojson(indent=3999999) }}", MANY),
    ("{{ ('x' * 9000).replace('', 'y' * 9999) }}", MESSAGES),
    ("{{ ('x' * 9000) | replace('', 'y' * 9999) }}", MESSAGES),
    ("{{ ('{0:>999999}' * 1000).format(1) }}", MESSAGES),
    ("{{ ('{0}' * 1000).format('x' * 3999999) }}", MESSAGES),
    ("{{ ('%999999s' * 1000) % ((1,) * 1000) }}", MESSAGES),
    ("{{ ('%999999s' * 1000) | format(*((1,) * 1000)) }}", MESSAGES),
    ("{{ ('x' * 900).translate({120: 'y' * 99999}) }}", MESSAGES),
    (BIG + "{{ ll | join }}", MESSAGES),
    (BIG + "{{ ''.join(ll | map('string')) }}", MESSAGES),
    (BIG + "{{ ll }}", MESSAGES),
    (BIG + "{{ ll ~ '' }}", MESSAGES),
    (BIG + "{{ ll | string }}", MESSAGES),
    (BIG + "{{ ll | tojson }}", MESSAGES),
    (BIG + "{{ '%s' % (ll,) }}", MESSAGES),
    ("{% set s = 'x' * 1000000 %}{% set b %}{% for i in range(2000) %}{{ s }}{% endfor %}{% endset %}{{ b }}",
     MESSAGES),
    ("{% set s = 'x' * 1000000 %}{% macro m() %}{% for i in range(2000) %}{{ s }}{% endfor %}{% endmacro %}"
     "{{ m() | length }}", MESSAGES),
    ("{{ ('a.com ' * 100) | urlize(target='t' * 1000000) }}", MESSAGES),
    ("{{ {('k' * 1000000): [1] * 300} | pprint }}", MESSAGES),
    ("{{ ([[1] * 1000] * 2000) | sum(start=[]) | length }}", MESSAGES),
    ("{{ ['x'] | batch(3999998, 'y' * 9999) | list | length }}", MESSAGES),
    ("{{ ('\\t' * 1999500) | wordwrap(1, wrapstring=('y' * 1)) }}", MESSAGES),  # fuzz case 397,538 of seed 0
    ("{{ ('x' * 1999500) | wordwrap(1) }}", MESSAGES),  # textwrap cuts one character off a 2 MB run at a time
])
def test_a_width_count_or_fill_multiplied_inside_one_call_is_refused_before_it_runs(source, messages):
    """A width below MAX_TEXT times the lines, tabs, items or fields of one C call: refused before the call
    builds anything (the bounds on steps and time cannot see inside it)."""
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError):
            ChatTemplate(source).render(messages)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("source, expected", [
    ("{{ 'a\\nb' | indent(2) }}", "a\n  b"),
    ("{{ 'ab'.center(6, '*') }}|{{ '7'.zfill(3) }}|{{ 'a\\tb'.expandtabs(4) }}", "**ab**|007|a   b"),
    ("{{ 'a-b-c'.replace('-', '+') }}|{{ 'abc' | replace('b', 'x') }}", "a+b+c|axc"),
    ("{{ ['a', 'b'] | join(', ') }}|{{ '-'.join(messages | map(attribute='role')) }}", "a, b|user"),
    ("{{ '{0}:{1:>4}'.format('a', 7) }}|{{ '%s=%03d' % ('n', 5) }}|{{ '%s!' | format('hi') }}", "a:   7|n=005|hi!"),
    ("{{ messages | tojson(indent=2) }}", '[\n  {\n    "role": "user",\n    "content": "Hi"\n  }\n]'),
    ("{{ [[1], [2, 3]] | sum(start=[]) }}|{{ [{'n': 2}, {'n': 3}] | sum(attribute='n') }}", "[1, 2, 3]|5"),
    ("{{ 'ab cd ef' | wordwrap(5) }}|{{ 'abcdefg' | wordwrap(3, wrapstring='-') }}", "ab cd\nef|abc-def-g"),
])
def test_the_checked_calls_still_compute_what_jinja_does(source, expected):
    assert ChatTemplate(source).render(MESSAGES) == expected


@pytest.mark.parametrize("source", [
    "{{ ('%999999s' * 99999) | format(*((1,) * 99999)) }}",  # the fuzzer's case 287,804 of seed 0
    "{{ ('%s' * 99999) | format(*((1,) * 99999)) }}",
    "{{ ('%s' * 99999) % ((1.5,) * 99999) }}",
    "{{ [None, True, 2.5, 7] * 20000 | join(',') }}",
])
def test_a_call_handed_many_numbers_is_checked_without_a_python_call_per_number(source):
    """The checks run between two of the sandbox's clock readings, so their cost must not grow by a Python
    call per argument: 100,000 numbers once cost 0.26 s of CPU here, and over 1 s on a loaded machine."""
    calls = collections.Counter()

    def count(frame, event, arg):
        if event == "call":
            calls[frame.f_code.co_name] += 1

    template = ChatTemplate(source)
    sys.setprofile(count)
    try:
        with pytest.raises(TemplateError):
            template.render(MESSAGES)
    finally:
        sys.setprofile(None)
    assert sum(calls.values()) < 2000, calls.most_common(3)


def test_docstring_examples():
    import doctest

    from pychat_wasm.chat import template_sizes

    for module in (template_sandbox, template_sizes):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_a_failed_render_frees_what_it_built_at_once():
    """What a refused template built is freed when the error is raised, not at a later garbage collection:
    three failing renders in a row peak no higher than one (Jinja's traceback rewriting held it in a cycle)."""
    source = "{% set b %}{% for i in range(5000) %}{{ 'y' * 3999990 }}{% endfor %}{% endset %}{{ b | length }}"
    template = ChatTemplate(source)

    def peak(renders):
        gc.collect()
        tracemalloc.start()
        try:
            for _ in range(renders):
                with pytest.raises(TemplateError, match="built more than"):
                    template.render([{"role": "user", "content": "hi"}])
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    gc.disable()
    try:
        one, three = peak(1), peak(3)
    finally:
        gc.enable()
    assert one > MAX_BUILT // 2  # the template did build close to its budget
    assert three < one * 1.2
