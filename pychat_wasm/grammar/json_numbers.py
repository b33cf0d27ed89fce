"""Integer ranges as GBNF: the decimal spellings (no leading zeros) of exactly the integers in [low, high].

llama.cpp's common/json-schema-to-grammar.cpp (_build_min_max_int) does the same job; this is our own
construction: split the range by number of digits, then split each same-length range at the first digit
where its ends differ, as one writes a regular expression for 27..314 by hand.

    >>> int_range(5, 30)
    '([5-9] | "1" [0-9] | [2-2] [0-9] | "3" "0")'
    >>> int_range(-3, None)
    '("-" [1-3] | [0-9] | [1-9] [0-9]{1,15})'
"""
from __future__ import annotations

from typing import List, Optional

MAX_DIGITS = 16  # unbounded integers stop here, as llama.cpp's integral-part ([1-9] [0-9]{0,15})


def int_range(low: Optional[int], high: Optional[int]) -> str:
    """A GBNF expression for the integers low..high (None: unbounded on that side), in parentheses."""
    parts: List[str] = []
    if low is None or low < 0:
        top = high if high is not None and high < 0 else -1  # the negatives are -|x| for |x| in -top..-low
        magnitudes = natural_range(-top, None if low is None else -low)
        parts.extend('"-" ' + p for p in magnitudes)
    if high is None or high >= 0:
        parts.extend(natural_range(max(low or 0, 0), high))
    return "(" + " | ".join(parts) + ")" if parts else '("0" [0])'  # an empty range matches nothing


def natural_range(low: int, high: Optional[int]) -> List[str]:
    """Alternatives for low..high, both >= 0, one or more per number of digits."""
    if high is not None and high < low:
        return []
    parts: List[str] = []
    length = len(str(low))
    last = MAX_DIGITS if high is None else len(str(high))
    while length <= last:
        first = 0 if length == 1 else 10 ** (length - 1)
        a = max(low, first)
        b = 10 ** length - 1 if high is None else min(high, 10 ** length - 1)
        if high is None and a == first and length > 1:
            parts.append("[1-9] [0-9]{%d,%d}" % (length - 1, MAX_DIGITS - 1))  # every longer number too
            break
        if a <= b:
            parts.extend(same_length(str(a), str(b)))
        length += 1
    return parts


def same_length(a: str, b: str) -> List[str]:
    """Alternatives for the numbers a..b written with the same number of digits (a <= b).

    >>> same_length("27", "31"), same_length("100", "199")
    (['"2" [7-9]', '"3" [0-1]'], ['"1" [0-9] [0-9]'])
    """
    if a == b:
        return ['"%s"' % a]
    rest = len(a) - 1
    if rest == 0:
        return ["[%s-%s]" % (a, b)]
    if a[0] == b[0]:
        return ['"%s" %s' % (a[0], p) for p in group(same_length(a[1:], b[1:]))]
    if a[1:] == "0" * rest and b[1:] == "9" * rest:
        return ["[%s-%s] %s" % (a[0], b[0], any_digits(rest))]
    parts = ['"%s" %s' % (a[0], p) for p in group(same_length(a[1:], "9" * rest))]
    if int(b[0]) - int(a[0]) > 1:
        parts.append("[%d-%d] %s" % (int(a[0]) + 1, int(b[0]) - 1, any_digits(rest)))  # the digits between
    parts.extend('"%s" %s' % (b[0], p) for p in group(same_length("0" * rest, b[1:])))
    return parts


def group(parts: List[str]) -> List[str]:
    return parts if len(parts) == 1 else ["(" + " | ".join(parts) + ")"]


def any_digits(n: int) -> str:
    return "[0-9]" if n == 1 else "[0-9]{%d}" % n
