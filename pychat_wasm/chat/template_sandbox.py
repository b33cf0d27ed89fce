"""A Jinja2 sandbox with bounds on work and size, for chat templates that come with untrusted files.

Jinja2's ImmutableSandboxedEnvironment already blocks Python internals (`__class__`, `__globals__`, ...),
attribute writes and ranges over 100,000 items. A hostile template can still ask for unbounded time
(nested loops) or memory (`'x' * 10**9`, `9 ** (9 ** 9)`, doubling a string in a loop, `center(10**9)`).
Here every way to grow a value is checked before it runs:

    operators   *, **, %, + on sequences and numbers     calls and filters   their arguments, the output
    `~` joins   and block captures (environment.concat)                        their inputs can build
    output      each printed value and the rendered text                       (template_sizes.py), results
    steps       Python line events while rendering (sys.settrace), so loops without output stop too

A width, count or fill is never checked on its own: `indent(3999999)` is harmless on one line and 1.2 G
characters on 300, so each call's output is estimated from all of its inputs before it runs.

Anything over a bound raises SecurityError, which the chat template reports as a TemplateError. The bounds
hold per render_bounded call (it resets them); a plain `render()` shares one running budget.

    >>> BoundedSandbox().from_string("{{ 'ab' * 3 }}").render()
    'ababab'
"""
from __future__ import annotations

import functools
import inspect
import math
import re
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sized

import jinja2.compiler
import jinja2.sandbox
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.utils import _PassArg

from .template_sizes import filter_parameters, method_output_size, method_parameters, shape_of, text_size

MAX_TEXT = 4_000_000  # characters (or items) of any value a template builds: ~16 MB of str at worst
MAX_WORK = 100_000_000  # estimated characters a single call may touch (s.replace('', t) is len(s) * len(t))
MAX_STEPS = 200_000  # Python line events per render (a 100-message chat takes ~20,000): ~0.1 s natively
MAX_BUILT = 50_000_000  # characters all checked operations of one render may build together
MAX_SECONDS = 1.0  # and, whatever the steps cost, no render runs longer than this
MAX_INT_BITS = 100_000  # integers a template computes (a ** b, a * a in a loop) stay below 2 ** this
_LONG_NUMBER = re.compile(r"\d{7}")  # a field width of 7 digits or more: up to a gigabyte from one field


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


def _untraced(function: Callable[..., Any]) -> Callable[..., Any]:
    """Our own checks are not the template's steps: they run with tracing paused, and the clock after them."""
    @functools.wraps(function)
    def untraced(*args: Any, **kwargs: Any) -> Any:
        tracer = sys.gettrace()
        sys.settrace(None)
        try:
            return function(*args, **kwargs)
        finally:
            sys.settrace(tracer)
            if tracer is _count_step:
                _check_clock()
    return untraced


@_untraced
def _check_result(value: Any) -> Any:
    _charge(_size(value))
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError("the template computed an integer of %d bits (at most %d)"
                            % (value.bit_length(), MAX_INT_BITS))
    if _size(value) > MAX_TEXT:
        raise SecurityError("the template built a value of %d characters (at most %d)" % (_size(value), MAX_TEXT))
    return value


@_untraced
def _check_arguments(args: Iterable[Any]) -> None:
    """Refuse calls whose integer arguments or string sizes could build something huge before we see it."""
    largest_int, work = 0, 1  # work: the product of every argument's size + 1
    for arg in args:
        if type(arg) is int or isinstance(arg, int) and not isinstance(arg, bool):
            largest_int = max(largest_int, abs(arg))
        elif work <= MAX_WORK and isinstance(arg, (str, bytes, list, tuple, dict)):  # others have size 0
            work *= _size(arg) + 1
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
        _check_output("%", left, {"arguments": right}, (left, right))


@_untraced
def _check_output(name: str, value: Any, params: dict, inputs: Iterable[Any]) -> None:
    """Refuse a call whose inputs could build more than MAX_TEXT characters (template_sizes.py)."""
    size = shape_of(inputs, MAX_TEXT).text + method_output_size(name, value, params, MAX_TEXT)
    if size > MAX_TEXT:
        raise SecurityError("the template called %s with inputs that could build %d characters (at most %d)"
                            % (name or "a function", size, MAX_TEXT))


def _bounded_output(value: Any) -> Any:
    """Jinja's finalize: a printed value is turned into text only if that text is within MAX_TEXT."""
    if not isinstance(value, str):
        _check_output("print", value, {}, (value,))
    return value


def _check_format_string(text: str) -> None:
    """'%0999999999d' and '{:>999999999}' build a gigabyte from a few characters: refuse long numbers in them."""
    if _LONG_NUMBER.search(text):
        raise SecurityError("the template formats with a field width too large to be safe")


def checked_concat(parts: Iterable[Any]) -> str:
    """`a ~ b` and the text a block or macro captures: Jinja's string join, refusing results over MAX_TEXT
    before any part is turned into text."""
    parts = list(parts)
    _check_concat(parts)
    return "".join([str(p) for p in parts])


@_untraced
def _check_concat(parts: list) -> None:
    total = sum(text_size(p, MAX_TEXT) for p in parts)
    if total > MAX_TEXT:
        raise SecurityError("the template joins strings into more than %d characters" % MAX_TEXT)
    _charge(total)


class _CheckedConcatGenerator(jinja2.compiler.CodeGenerator):
    """Compiles `~` to environment.checked_concat(...) instead of Jinja's unchecked join."""

    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter `name` with its arguments, the output they can build, and its result checked."""
    signature = inspect.signature(function)
    passes_context = _PassArg.from_obj(function) is not None

    def check_output(bound: inspect.BoundArguments) -> None:
        arguments = dict(list(bound.arguments.items())[int(passes_context):])
        _check_output(name, *filter_parameters(name, arguments), arguments.values())

    @_untraced
    def checked_arguments(args: tuple, kwargs: dict) -> Optional[inspect.BoundArguments]:
        """The bound arguments, checked; None for arguments the filter itself will refuse."""
        _check_arguments(list(args) + list(kwargs.values()))
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        if name not in MATERIALIZED:
            check_output(bound)
        return bound

    @functools.wraps(function)  # keeps Jinja's pass-environment/context flags
    def bounded(*args: Any, **kwargs: Any) -> Any:
        bound = checked_arguments(args, kwargs)
        if bound is None:
            return _check_result(function(*args, **kwargs))
        if name in MATERIALIZED:
            _materialize(name, bound.arguments, args[0] if passes_context else None)  # template code: traced
            check_output(bound)
        return _check_result(function(*bound.args, **bound.kwargs))
    return bounded


MATERIALIZED = ("join", "sum")  # filters that take any iterable (`messages | map(...)`)


def _materialize(name: str, arguments: dict, environment: Any) -> None:
    """List the iterable of a `join` or `sum`, so its items can be counted before the call."""
    key = "iterable" if name == "sum" else "value"
    items = arguments.get(key)
    if name == "sum" and arguments.get("attribute") is not None:
        items, arguments["attribute"] = map(make_attrgetter(environment, arguments["attribute"]), items), None
    if not isinstance(items, Sized):
        arguments[key] = list(items)


class BoundedSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox plus the bounds above; render with `render_bounded`."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = _CheckedConcatGenerator

    def __init__(self, **options: Any):
        super().__init__(**dict({"finalize": _bounded_output}, **options))
        self.checked_concat = self.concat = checked_concat  # concat: what blocks and macros capture
        self.filters = {name: bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _check_result(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's API)
        method = getattr(__obj, "__wrapped__", __obj)  # Jinja 3 wraps str.format at attribute access
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(owner, (str, bytes)):
            if name in ("format", "format_map"):
                _check_format_string(str(owner))
            if name == "join" and args and not isinstance(args[0], Sized):
                args = (list(args[0]),) + args[1:]
            call_name, params = _untraced(method_parameters)(owner, name, args, kwargs)
            _check_output(call_name, owner, params, [owner, *args, *kwargs.values()])
        else:
            _check_output("", None, {}, [*args, *kwargs.values()])
        _check_arguments([owner] + list(args) + list(kwargs.values()))
        return _check_result(super().call(__context, __obj, *args, **kwargs))


def render_bounded(template: Any, variables: dict) -> str:
    """Render within MAX_STEPS line events, MAX_BUILT characters built, MAX_SECONDS and MAX_TEXT of output."""
    _Budget.built, _Budget.steps, _Budget.started = 0, 0, time.perf_counter()
    previous = sys.gettrace()
    sys.settrace(_count_step)
    try:
        # root_render_func, not template.generate: generate's handler rewrites the traceback into a reference
        # cycle that keeps the failed render's frames (and up to MAX_BUILT characters a hostile template built
        # in them) alive until some later garbage collection, while the next render builds as much again
        return checked_concat(_collect(template.root_render_func(template.new_context(variables))))
    finally:
        sys.settrace(previous)


def _count_step(frame: Any, event: str, arg: Any) -> Any:
    _Budget.steps += 1
    if _Budget.steps > MAX_STEPS:
        raise SecurityError("the template ran for more than %d steps" % MAX_STEPS)
    if _Budget.steps % 1024 == 0:
        _check_clock()
    return _count_step


def _check_clock() -> None:
    if time.perf_counter() - _Budget.started > MAX_SECONDS:
        raise SecurityError("the template ran for more than %g s" % MAX_SECONDS)


def _collect(pieces: Iterator[str]) -> Iterator[str]:
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_TEXT:
            raise SecurityError("the template wrote more than %d characters" % MAX_TEXT)
        yield piece
