"""Hostile chat templates built from every filter and method that takes a width, count or fill.

Each asks for the most a single argument may be (just below the sandbox's bounds, so no argument check
alone refuses it) on a long input: many lines, tabs, items or fields, which one C call would multiply.
The sandbox must refuse each before the call runs (template_sandbox.py, template_sizes.py) or render it
within its bounds.

    >>> "{{" in generate_template(random.Random(1))
    True
"""
from __future__ import annotations

import random

from pychat_wasm.chat.template_sandbox import MAX_TEXT

FIELD_WIDTH = 999_999  # the widest format field width the sandbox lets through (7 digits are refused)
# T: a long text, F: a fill, W: a width, N: a count, L: a list of shared texts.
FORMS = [
    "{{ T | indent(W) }}", "{{ T | indent(F) }}", "{{ T | center(W) }}", "{{ T.center(W, '*') }}",
    "{{ T.ljust(W) }}", "{{ T.rjust(W) }}", "{{ T.zfill(W) }}", "{{ T.expandtabs(W) }}",
    "{{ T.replace('', F) }}", "{{ T | replace('x', F) }}", "{{ T.replace('x', F, N) }}",
    "{{ F.join(L) }}", "{{ L | join(F) }}", "{{ L | map('string') | join(F) }}",
    "{{ L | tojson(indent=W) }}", "{{ messages | tojson(indent=W) }}", "{{ T | wordwrap(1, wrapstring=F) }}",
    "{{ T | truncate(W, end=F) }}", "{{ ('{0:>%(fw)d}' * N).format(T) }}", "{{ ('{0}' * N).format(F) }}",
    "{{ ('%%%(fw)ds' * N) %% ((1,) * N) }}", "{{ ('%%%(fw)ds' * N) | format(*((1,) * N)) }}",
    "{{ T | urlize(target=F) }}", "{{ {F: L} | pprint }}", "{{ L | pprint }}", "{{ L | sum(start=[]) }}",
    "{{ T.translate({120: F}) }}", "{{ T * N }}", "{{ L }}", "{{ L | string }}", "{{ L ~ T }}",
    "{{ '%%s' %% (L,) }}", "{{ L | batch(W, F) | list | length }}", "{{ L | xmlattr }}",
    "{% set b %}{%% for i in range(N) %%}{{ F }}{%% endfor %%}{% endset %}{{ b | length }}",
]


def _below(rng: random.Random, bound: int) -> int:
    return bound - rng.choice((1, 2, 10, 1000))


def generate_template(rng: random.Random) -> str:
    """One form with its placeholders filled: widths just below MAX_TEXT, long texts, many shared items."""
    count = rng.choice((2, 3, 60, 300, 5000, 99_999))
    text = rng.choice(["('x\\n' * %d)", "('\\t' * %d)", "(messages[-1]['content'] * %d)", "('a.com ' * %d)",
                       "('x' * %d)"]) % rng.choice((1, 300, 20_000, _below(rng, MAX_TEXT) // 2))
    fill = "('y' * %d)" % rng.choice((1, 99, 9_999, _below(rng, MAX_TEXT)))
    items = "([[%s] * 3] * %d)" % (text, count)
    form = rng.choice(FORMS)
    form = form.replace("%(fw)d", str(FIELD_WIDTH)) if "%(fw)d" in form else form
    form = form.replace("%%", "%")
    return (form.replace("W", str(_below(rng, MAX_TEXT))).replace("N", str(count)).replace("L", items)
            .replace("F", fill).replace("T", text))
