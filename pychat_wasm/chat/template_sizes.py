"""How much text a template call can build, estimated from its inputs before the call runs.

One C call can multiply a width, count or fill by the number of lines, tabs, items or fields of its
input: `s | indent(3999999)` over 300 lines is 1.2 G characters, `'\\t' * 500 | expandtabs(3999999)` 2 G,
`[s] * 1000 | join` or `{{ [[s] * 1000] * 1000 }}` a thousand copies of s. Neither the step count nor
the clock sees inside a C call, so template_sandbox.py asks these estimates first and refuses a call
whose output could pass its bound. An estimate is an upper bound up to a small constant factor (quotes
and escapes of `repr` or JSON); what it must never miss is a product.

    >>> text_size(["ab", "cd"] * 3, limit=100)
    38
    >>> method_output_size("indent", "a\\nb\\nc", {"width": 10}, limit=10 ** 6) >= 30
    True
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, NamedTuple, Tuple

from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined
from jinja2.utils import Namespace

MAX_VISITS = 200_000  # distinct items one estimate may look at: far more than any real conversation holds
FIELD_SLACK = 320  # characters one format field may add beyond its widths and argument ('%f' of 1e308)
_SCALAR_CHARS = 26  # a float's repr (up to 24 characters), its comma and space; None, True and False fit
# Characters that end a line for str.splitlines(), which `indent` and `wordwrap` split on.
_LINE_ENDS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_DIGIT_RUNS = re.compile(r"\d+")
_RUNS = re.compile(r"\s+|\S+")
_COLLECTIONS = (list, tuple, set, frozenset, range, type({}.keys()), type({}.values()), type({}.items()))
# The parameters of the str methods that take a width, count, fill or table, in order.
_METHOD_PARAMETERS = {"center": ("width", "fillchar"), "ljust": ("width", "fillchar"),
                      "rjust": ("width", "fillchar"), "zfill": ("width",), "expandtabs": ("tabsize",),
                      "replace": ("old", "new", "count"), "translate": ("table",)}


class Shape(NamedTuple):
    """What a value holds when written out: characters (shared items counted each time they appear),
    items (each becomes a line of `tojson(indent=...)` or `pprint`), nesting depth, longest dict key."""

    text: int
    items: int
    depth: int
    widest_key: int


class _Walk:
    """One estimate's walk over a value; remembers shared items by id, stops past `limit` characters."""

    def __init__(self, limit: int):
        self.limit, self.memo, self.visits = limit, {}, 0

    def shape(self, value: Any, depth: int = 0) -> Shape:
        if isinstance(value, (str, bytes)):
            return Shape(len(value) + 2, 1, 0, 0)
        if value is None or isinstance(value, (bool, int, float, Undefined)):
            return Shape((value.bit_length() + 2) if isinstance(value, int) else _SCALAR_CHARS - 2, 1, 0, 0)
        known = self.memo.get(id(value))
        if known is not None:
            return known
        if depth > 100:
            raise SecurityError("the template handed a call a value nested more than 100 deep")
        if isinstance(value, Namespace):
            value = object.__getattribute__(value, "_Namespace__attrs")
        if isinstance(value, dict):
            keys = self._sum(value.keys(), depth)
            values = self._sum(value.values(), depth)
            shape = Shape(2 + keys.text + values.text + 2 * len(value), 1 + keys.items + values.items,
                          1 + max(keys.depth, values.depth), max(keys.text_of_longest, values.widest_key))
        elif isinstance(value, _COLLECTIONS):
            items = self._sum(value, depth)
            shape = Shape(2 + items.text, 1 + items.items, 1 + items.depth, items.widest_key)
        else:  # macros, loops, cyclers: a short repr
            return Shape(64, 1, 0, 0)
        if shape.text > self.limit:
            raise SecurityError("the template handed a call values of more than %d characters" % self.limit)
        self.memo[id(value)] = shape
        return shape

    def _sum(self, items: Any, depth: int) -> "_Sum":
        """Items of one container added up; strings, numbers and shared items without a walk each (a call
        handed 100,000 numbers is checked in milliseconds, between two of the sandbox's clock checks)."""
        self.visits += len(items)
        if self.visits > MAX_VISITS:
            raise SecurityError("the template handed a call more than %d items" % MAX_VISITS)
        total, memo, limit = _Sum(), self.memo, self.limit
        text = count = longest = 0
        for item in items:
            kind = type(item)
            if kind is str:
                size = len(item) + 4  # quotes, comma and space
                count += 1
            elif kind is int or kind is float or item is None or kind is bool:
                size = _SCALAR_CHARS if kind is not int else item.bit_length() + 4
                count += 1
            else:
                shape = memo.get(id(item)) or self.shape(item, depth + 1)
                size = shape.text + 2
                count += shape.items
                total.depth = max(total.depth, shape.depth)
                total.widest_key = max(total.widest_key, shape.widest_key)
            text += size
            if size > longest:
                longest = size
                if text > limit:
                    raise SecurityError("the template handed a call values of more than %d characters" % limit)
        total.text, total.items, total.text_of_longest = text, count, longest
        return total


class _Sum:
    """Running totals over a container's items (text_of_longest: the longest item, for dict keys)."""

    def __init__(self) -> None:
        self.text = self.items = self.depth = self.widest_key = self.text_of_longest = 0


def shape_of(values: Iterable[Any], limit: int) -> Shape:
    """The shape of several values together (a call's arguments); SecurityError past `limit` characters."""
    return _Walk(limit).shape(list(values))


def text_size(value: Any, limit: int) -> int:
    """Characters `str(value)` may take, up to quotes and escapes."""
    return len(value) if isinstance(value, str) else _Walk(limit).shape(value).text


def _longest_run(text: str) -> int:
    """The longest run of spaces or of other characters, as textwrap sees it (a tab becomes up to 8 spaces)."""
    return max(map(len, _RUNS.findall(text)), default=0) * (8 if "\t" in text else 1)


def _int(value: Any) -> int:
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _width(value: Any) -> int:
    """A width given as a number of spaces or as the text itself (indent accepts both)."""
    return len(value) if isinstance(value, str) else _int(value)


def _lines(text: str) -> int:
    return 1 + sum(text.count(end) for end in _LINE_ENDS)


def format_output_size(form: str, arguments: Any, limit: int) -> int:
    """`form % arguments` or `form.format(*arguments)`: every field may hold the widest width or number
    in the form or the arguments (`'%*d'`, `'{:>{}}'`) and the longest argument (`'{0}{0}{0}'`)."""
    values = list(arguments.values()) if isinstance(arguments, dict) else \
        list(arguments) if isinstance(arguments, (tuple, list)) else [arguments]
    fields = form.count("%") + form.count("{")
    widths = [int(run) for run in _DIGIT_RUNS.findall(form)] + [abs(v) for v in values if type(v) is int]
    without_values = len(form) + fields * (max(widths, default=0) + FIELD_SLACK)
    if without_values > limit:  # refused already: no need to measure every value
        return without_values
    return without_values + fields * _Walk(limit)._sum(values, 0).text_of_longest


def _replace_size(text: str, old: Any, new: Any, count: Any) -> int:
    old, new = str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * len(new)


def method_output_size(name: str, value: Any, params: Dict[str, Any], limit: int) -> int:
    """Characters a filter or str method `name` may build from `value` (the text or sequence it works on)
    and its other parameters, beyond what text_size of the inputs already counts."""
    text = value if isinstance(value, (str, bytes)) else ""
    if name in ("center", "ljust", "rjust", "zfill"):
        return _int(params.get("width"))
    if name == "indent":
        return (_lines(str(value)) + 1) * _width(params.get("width"))
    if name == "expandtabs":
        return text.count("\t" if isinstance(text, str) else b"\t") * _int(params.get("tabsize", 8))
    if name == "replace" and isinstance(value, str):
        return _replace_size(value, params.get("old"), params.get("new"), params.get("count"))
    if name == "join":
        return len(params.get("items", ())) * len(str(params.get("separator", "")))
    if name in ("format", "%"):
        return format_output_size(str(value), params.get("arguments", ()), limit)
    if name == "translate" and isinstance(params.get("table"), dict):
        return len(text) * max((text_size(v, limit) for v in params["table"].values()), default=0)
    if name == "wordwrap":  # textwrap cuts a run longer than the width off its front once per width
        run = _longest_run(str(value))
        return (len(str(value)) + 1) * len(str(params.get("wrapstring") or "\n")) + \
            run * run // max(_int(params.get("width", 79)), 1)
    if name == "truncate":
        return len(str(params.get("end", "")))
    if name == "urlize":
        words = len(str(value)) // 2 + 1
        return 11 * len(str(value)) + words * (text_size(params.get("target") or "", limit)
                                               + text_size(params.get("rel") or "", limit) + 64)
    if name == "batch" and params.get("fill_with") is not None:  # pads the last row to linecount items
        return _int(params.get("linecount")) * (text_size(params["fill_with"], limit) + 2)
    if name == "sum":  # sum(lists, start=[]) copies the growing list once per item
        return len(value) * sum(len(v) for v in value if isinstance(v, (list, tuple, str)))
    if name in ("tojson", "pprint"):
        shape = _Walk(limit).shape(value)
        per_level = _width(params.get("indent")) if name == "tojson" else shape.widest_key + 4
        wrapped = shape.text // 40 if name == "pprint" else 0  # pprint breaks long strings into lines
        return (shape.items + wrapped) * (shape.depth * per_level + 1)
    return 0


def filter_parameters(name: str, arguments: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """A filter's bound arguments (context first dropped) as (the value it works on, named parameters)."""
    names = list(arguments)
    value, params = arguments[names[0]], {k: arguments[k] for k in names[1:]}
    if name == "join":
        params = {"items": value, "separator": params.get("d", "")}
    elif name == "format":
        params = {"arguments": params.get("kwargs") or params.get("args", ())}
    return value, params


def method_parameters(owner: Any, name: str, args: tuple, kwargs: dict) -> Tuple[str, Dict[str, Any]]:
    """A str method's arguments as (the name its estimate goes by, named parameters)."""
    if name == "join":
        return "join", {"items": args[0] if args else (), "separator": owner}
    if name in ("format", "format_map"):
        arguments = list(args[0].values()) if name == "format_map" and args and isinstance(args[0], dict) \
            else list(args) + list(kwargs.values())
        return "format", {"arguments": arguments}
    return name, dict(zip(_METHOD_PARAMETERS.get(name, ()), args), **kwargs)
