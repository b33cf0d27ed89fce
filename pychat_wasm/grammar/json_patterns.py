"""JSON Schema `pattern` (a regular expression) as GBNF, for the common subset a grammar can express.

Supported, as in llama.cpp's converter (common/json-schema-to-grammar.cpp, _visit_pattern): literals and
escapes (\\. \\^ \\$ ...); classes [a-z_] and [^...]; \\d \\w \\s; `.`; groups ( ) and (?: );
alternation |; quantifiers * + ? {m} {m,} {m,n}; ^ and $ at the ends (without them the pattern may match
anywhere in the string, as JSON Schema searches). Anything else (lookaround, backreferences, lazy
quantifiers) is a GrammarError naming the construct; llama.cpp instead accepts any string there.
The GBNF matches the JSON text inside the string's quotes: a `"` or `\\` in the pattern is written as
its JSON escape; inside a class they (and control characters) are refused.

    >>> pattern_to_gbnf("^[a-z]+-\\\\d{2}$")
    '[a-z]+ "-" [0-9]{2}'
"""
from __future__ import annotations

import json

from ..errors import GrammarError

CLASS_ESCAPES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " "}  # \\s: a space only; raw tabs and newlines are not JSON
NOT_IN_JSON = '\\"\\\\\\x00-\\x1f'  # what a negated class or `.` must still exclude: JSON escapes these
LITERAL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}


def gbnf_literal(text: str) -> str:
    r"""A GBNF string literal for `text`: '"a\"b"' for a"b."""
    escaped = "".join("\\" + c if c in '"\\' else {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, c)
                      if c.isprintable() or c in "\n\t\r" else "\\u%04x" % ord(c) if ord(c) < 0x10000
                      else "\\U%08x" % ord(c) for c in text)
    return '"%s"' % escaped


def class_char(c: str) -> str:
    """One character written inside a GBNF class."""
    if c in "]\\-^\"[":
        return "\\" + c
    if not c.isprintable():
        return "\\x%02x" % ord(c) if ord(c) < 256 else "\\u%04x" % ord(c)
    return c


def pattern_to_gbnf(pattern: str) -> str:
    """The GBNF for the string contents `pattern` matches; without ^ or $ it may match anywhere (as a search)."""
    if not isinstance(pattern, str):
        raise GrammarError("pattern must be a string, not %r" % (pattern,))
    start = 1 if pattern.startswith("^") else 0
    anchored_end = pattern.endswith("$") and not pattern.endswith("\\$") and len(pattern) > start
    end = len(pattern) - 1 if anchored_end else len(pattern)
    reader = PatternReader(pattern[start:end], pattern)
    expression = reader.alternatives()
    if reader.pos != len(reader.text):
        raise reader.error("unbalanced ')'")
    anything = "([^%s] | [\\\\] ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}))*" % NOT_IN_JSON  # any JSON string text
    if len(reader.text) and " | " in expression and not expression.startswith("("):
        expression = "(" + expression + ")"
    return " ".join(([] if start else [anything]) + [expression or '""'] + ([] if anchored_end else [anything]))


class PatternReader:
    def __init__(self, text: str, pattern: str):
        self.text, self.pattern, self.pos = text, pattern, 0

    def error(self, what: str) -> GrammarError:
        return GrammarError("pattern %r: %s (at character %d)" % (self.pattern, what, self.pos + 1))

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def alternatives(self) -> str:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else "(" + " | ".join(o or '""' for o in options) + ")"

    def sequence(self) -> str:
        items = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            items.append(atom + self.quantifier())
        return " ".join(items)

    def atom(self) -> str:
        c = self.peek()
        self.pos += 1
        if c == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                raise self.error("lookaround and named groups are not supported")
            inner = self.alternatives()
            if self.peek() != ")":
                raise self.error("unbalanced '('")
            self.pos += 1
            return "(" + (inner or '""') + ")"
        if c == "[":
            return self.char_class()
        if c == ".":
            return "[^%s]" % NOT_IN_JSON
        if c == "\\":
            return self.escape(in_class=False)
        if c in "*+?{":
            raise self.error("nothing to repeat")
        if c in "^$":
            raise self.error("anchors inside the pattern are not supported")
        return gbnf_literal(json.dumps(c, ensure_ascii=False)[1:-1])  # " and \\ as JSON writes them

    def escape(self, in_class: bool) -> str:
        c = self.peek()
        self.pos += 1
        if c in CLASS_ESCAPES:
            return CLASS_ESCAPES[c] if in_class else "[%s]" % CLASS_ESCAPES[c]
        if c in LITERAL_ESCAPES:
            char = LITERAL_ESCAPES[c]
        elif c and not c.isalnum():
            char = c
        else:
            raise self.error("escape \\%s is not supported" % c)
        if in_class and (char in '"\\' or ord(char) < 0x20):
            raise self.error("quotes, backslashes and control characters in classes are not supported")
        return class_char(char) if in_class else gbnf_literal(json.dumps(char)[1:-1])

    def char_class(self) -> str:
        out = "["
        if self.peek() == "^":
            out += "^"
            self.pos += 1
        first = True
        while self.peek() != "]" or first:
            c = self.peek()
            if c == "":
                raise self.error("unterminated character class")
            self.pos += 1
            if c == "\\":
                out += self.escape(in_class=True)
            elif c == "-" and not first and self.peek() != "]":
                out += "-"
            else:
                out += class_char(c)
            first = False
        self.pos += 1
        return out + (NOT_IN_JSON if out.startswith("[^") else "") + "]"

    def quantifier(self) -> str:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.pos += 1
            if self.peek() in ("?", "+"):
                raise self.error("lazy and possessive quantifiers are not supported")
            return c
        if c != "{":
            return ""
        end = self.text.find("}", self.pos)
        body = self.text[self.pos + 1:end] if end > 0 else ""
        bounds = body.split(",")
        if end < 0 or len(bounds) > 2 or not all(b.strip().isdigit() or (i == 1 and not b.strip())
                                                 for i, b in enumerate(bounds)):
            raise self.error("a repetition must be {m}, {m,} or {m,n}")
        self.pos = end + 1
        return "{%s}" % ",".join(b.strip() for b in bounds)
