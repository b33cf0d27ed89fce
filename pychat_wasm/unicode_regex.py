"""Pre-tokenizer regexes with Unicode classes (`\\p{L}`, `\\s`, ...) compiled by the standard `re` module.

Tokenizer patterns are written for the `regex` module (as in HF tokenizers and llama.cpp): `\\p{L}+`,
`[^\\s\\p{L}\\p{N}]`. `re` has no `\\p{...}`, and its `\\s` also takes U+001C..U+001F, which `regex` does
not. So each class is spelled out as the code point ranges in `unicode_classes` (generated once from
`regex`, the same on every Python whatever its `unicodedata`):

    \\p{X} outside brackets -> [ranges of X]        \\s -> [white space]     \\S -> [^white space]
    \\p{X} inside brackets  -> ranges of X           (also in negated classes: [^\\s\\p{L}] stays exact)

Escapes whose meaning differs between the two modules (\\d \\w \\b and the rest) are refused rather than
guessed. Everything else, `(?i:...)` and look-aheads included, means the same to `re`.

Speed: `re` checks a class's code points beyond U+FFFF one range at a time (those below in one table
look-up), which made `\\p{N}` over plain text ten times slower. So each pattern is compiled twice, with
and without the ranges beyond U+FFFF, and text that holds no such character (nearly all text) takes the
second: for it the two match exactly the same.

    >>> compile_unicode_regex(r" ?\\p{L}+|\\p{N}").findall("héllo 42")
    ['héllo', '4', '2']
"""
from __future__ import annotations

import re
from typing import Dict, Iterator, List, Match, Pattern, Tuple

from .unicode_classes import RANGES

REFUSED_ESCAPES = "dDwWbBAZhHvVpPX"  # mean something else (or nothing) to `re`; \p and \P only as \p{X}


def class_body(ranges: Tuple[Tuple[int, int], ...]) -> str:
    """The inside of a character class that matches exactly `ranges`.

    >>> class_body(((0x41, 0x5A), (0xB5, 0xB5)))
    '\\\\x41-\\\\x5a\\\\xb5'
    """
    return "".join(_escape(a) if a == b else _escape(a) + "-" + _escape(b) for a, b in ranges)


def _escape(code_point: int) -> str:
    if code_point < 0x100:
        return "\\x%02x" % code_point
    if code_point < 0x10000:
        return "\\u%04x" % code_point
    return "\\U%08x" % code_point


BMP_LAST = 0xFFFF  # the last code point of the Basic Multilingual Plane


def _bmp_part(ranges: Tuple[Tuple[int, int], ...]) -> Tuple[Tuple[int, int], ...]:
    return tuple((a, min(b, BMP_LAST)) for a, b in ranges if a <= BMP_LAST)


_BODIES: Dict[str, str] = {name: class_body(ranges) for name, ranges in RANGES.items()}
_BMP_BODIES: Dict[str, str] = {name: class_body(_bmp_part(ranges)) for name, ranges in RANGES.items()}


def translate(pattern: str, bmp_only: bool = False) -> str:
    """A `regex` pattern spelled for `re`: its Unicode classes replaced by their ranges (`bmp_only`: only
    those up to U+FFFF, for text without characters beyond).

    >>> translate(r"[^\\s\\p{N}]") == "[^" + _BODIES["s"] + _BODIES["N"] + "]"
    True
    """
    bodies = _BMP_BODIES if bmp_only else _BODIES
    out: List[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i + 1:i + 2]
            if escaped == "p" and pattern[i + 2:i + 3] == "{":
                end = pattern.find("}", i)
                name = pattern[i + 3:end]
                if end < 0 or name not in _BODIES or name == "s":
                    raise ValueError("unsupported Unicode class %r in %r (known: %s)"
                                     % (pattern[i:end + 1], pattern, ", ".join(n for n in RANGES if n != "s")))
                out.append(bodies[name] if in_class else "[%s]" % bodies[name])
                i = end + 1
                continue
            if escaped == "s":
                out.append(bodies["s"] if in_class else "[%s]" % bodies["s"])
            elif escaped == "S" and not in_class:
                out.append("[^%s]" % bodies["s"])
            elif escaped == "S" or (escaped and escaped in REFUSED_ESCAPES):
                raise ValueError("escape \\%s in %r means different things to `regex` and `re`" % (escaped, pattern))
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            if pattern[i + 1:i + 2] == "^":  # a "]" right after "[" or "[^" would be a literal: not used here
                out.append("^")
                i += 1
        elif c == "[":
            raise ValueError("nested character class in %r: `re` reads it differently" % pattern)
        elif c == "]" and in_class:
            in_class = False
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


class UnicodeRegex:
    """A `regex`-syntax pattern matched by `re`, with the fast variant for text within U+0000..U+FFFF."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.full = re.compile(translate(pattern))
        self.bmp = re.compile(translate(pattern, bmp_only=True))

    def _for(self, text: str) -> Pattern[str]:
        return self.bmp if text.isascii() or max(text) <= "\uffff" else self.full

    def finditer(self, text: str) -> Iterator[Match[str]]:
        return self._for(text).finditer(text)

    def findall(self, text: str) -> List[str]:
        return self._for(text).findall(text)

    def sub(self, replacement: str, text: str) -> str:
        return self._for(text).sub(replacement, text)


_COMPILED: Dict[str, UnicodeRegex] = {}


def compile_unicode_regex(pattern: str) -> UnicodeRegex:
    """The pattern compiled for `re`, once per pattern (the translations are long and compile slowly)."""
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        compiled = _COMPILED[pattern] = UnicodeRegex(pattern)
    return compiled
