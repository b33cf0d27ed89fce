"""A Jinja2 sandbox with bounds on work and size, for chat templates that come with untrusted files.

Jinja2's ImmutableSandboxedEnvironment already blocks Python internals (`__class__`, `__globals__`, ...),
attribute writes and ranges over 100,000 items. A hostile template can still ask for unbounded time
(nested loops) or memory (`'x' * 10**9`, `9 ** (9 ** 9)`, doubling a string in a loop, `center(10**9)`).
Here every way to grow a value is checked before it runs:

    operators   *, **, %, + on sequences and numbers     calls and filters   their arguments and results
    `~` joins   (through our own code generator)           output              the rendered text
    steps       Python line events while rendering (sys.settrace), so loops without output stop too

Anything over a bound raises SecurityError, which the chat template reports as a TemplateError. The bounds
hold per render_bounded call (it resets them); a plain `render()` shares one running budget.

    >>> BoundedSandbox().from_string("{{ 'ab' * 3 }}").render()
    'ababab'
"""
from __future__ import annotations

import functools
import math
import sys
import time
from typing import Any, Callable, Iterable, Iterator

import jinja2.compiler
import jinja2.sandbox
from jinja2.exceptions import SecurityError

MAX_TEXT = 4_000_000  # characters (or items) of any value a template builds: ~16 MB of str at worst
MAX_WORK = 100_000_000  # estimated characters a single call may touch (s.replace('', t) is len(s) * len(t))
MAX_STEPS = 200_000  # Python line events per render (a 100-message chat takes ~20,000): ~0.1 s natively
MAX_BUILT = 50_000_000  # characters all checked operations of one render may build together
MAX_SECONDS = 1.0  # and, whatever the steps cost, no render runs longer than this
MAX_INT_BITS = 100_000  # integers a template computes (a ** b, a * a in a loop) stay below 2 ** this


def _size(value: Any) -> int:
    """Characters or items held by a value, one level into lists (['x' * 99] * 99 is 99 * 99)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple, dict)):
        items = value.values() if isinstance(value, dict) else value
        return len(value) + sum(len(v) for v in items if isinstance(v, (str, bytes, list, tuple, dict)))
    return 0


class _Budget:
    """What the render in progress has used (renders do not nest: a template cannot start one)."""

    built = 0
    steps = 0
    started = 0.0


def _charge(n_chars: int) -> None:
    _Budget.built += n_chars
    if _Budget.built > MAX_BUILT:
        raise SecurityError("the template built more than %d characters in all" % MAX_BUILT)


def _check_result(value: Any) -> Any:
    _charge(_size(value))
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError("the template computed an integer of %d bits (at most %d)"
                            % (value.bit_length(), MAX_INT_BITS))
    if _size(value) > MAX_TEXT:
        raise SecurityError("the template built a value of %d characters (at most %d)" % (_size(value), MAX_TEXT))
    return value


def _check_arguments(args: Iterable[Any]) -> None:
    """Refuse calls whose integer arguments or string sizes could build something huge before we see it."""
    sizes, largest_int = [], 0
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            largest_int = max(largest_int, abs(arg))
        sizes.append(_size(arg))
    work = math.prod(s + 1 for s in sizes)
    if largest_int > MAX_TEXT or work > MAX_WORK:
        raise SecurityError("the template called something with arguments too large to be safe")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
        if abs(right) * math.log2(abs(left) + 2) > MAX_INT_BITS:
            raise SecurityError("the template computes %r ** %r, too large a power" % (left, right))
    elif operator == "*" and isinstance(right, int) and _size(left) * abs(right) > MAX_TEXT or \
            operator == "*" and isinstance(left, int) and _size(right) * abs(left) > MAX_TEXT:
        raise SecurityError("the template repeats a value into more than %d characters" % MAX_TEXT)
    elif operator == "+" and _size(left) + _size(right) > MAX_TEXT:
        raise SecurityError("the template joins values into more than %d characters" % MAX_TEXT)
    elif operator == "%" and isinstance(left, str):
        _check_arguments(right if isinstance(right, tuple) else (right,))
        _check_format_string(left)


def _check_format_string(text: str) -> None:
    """'%0999999999d' and '{:>999999999}' build a gigabyte from a few characters: refuse long numbers in them."""
    if any(len(run) > 6 for run in "".join(c if c.isdigit() else " " for c in text).split()):
        raise SecurityError("the template formats with a field width too large to be safe")


def checked_concat(parts: Iterable[Any]) -> str:
    """`a ~ b`: Jinja's string join, refusing results over MAX_TEXT."""
    pieces = [str(p) for p in parts]
    total = sum(len(p) for p in pieces)
    if total > MAX_TEXT:
        raise SecurityError("the template joins strings into more than %d characters" % MAX_TEXT)
    _charge(total)
    return "".join(pieces)


class _CheckedConcatGenerator(jinja2.compiler.CodeGenerator):
    """Compiles `~` to environment.checked_concat(...) instead of Jinja's unchecked join."""

    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter (or any function) whose arguments and result are checked like a call's."""
    @functools.wraps(function)  # keeps Jinja's pass-environment/context flags
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(list(args) + list(kwargs.values()))
        return _check_result(function(*args, **kwargs))
    return bounded


class BoundedSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox plus the bounds above; render with `render_bounded`."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = _CheckedConcatGenerator

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.checked_concat = checked_concat
        self.filters = {name: bounded_filter(f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _check_result(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's API)
        method = getattr(__obj, "__wrapped__", __obj)  # Jinja 3 wraps str.format at attribute access
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") in ("format", "format_map"):
            _check_format_string(owner)
        _check_arguments([owner] + list(args) + list(kwargs.values()))
        return _check_result(super().call(__context, __obj, *args, **kwargs))


def render_bounded(template: Any, variables: dict) -> str:
    """Render within MAX_STEPS line events, MAX_BUILT characters built, MAX_SECONDS and MAX_TEXT of output."""
    _Budget.built, _Budget.steps, _Budget.started = 0, 0, time.perf_counter()
    previous = sys.gettrace()
    sys.settrace(_count_step)
    try:
        return checked_concat(_collect(template.generate(**variables)))
    finally:
        sys.settrace(previous)


def _count_step(frame: Any, event: str, arg: Any) -> Any:
    _Budget.steps += 1
    if _Budget.steps > MAX_STEPS:
        raise SecurityError("the template ran for more than %d steps" % MAX_STEPS)
    if _Budget.steps % 1024 == 0 and time.perf_counter() - _Budget.started > MAX_SECONDS:
        raise SecurityError("the template ran for more than %g s" % MAX_SECONDS)
    return _count_step


def _collect(pieces: Iterator[str]) -> Iterator[str]:
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_TEXT:
            raise SecurityError("the template wrote more than %d characters" % MAX_TEXT)
        yield piece
