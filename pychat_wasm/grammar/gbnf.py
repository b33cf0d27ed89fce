"""GBNF, llama.cpp's grammar language, parsed into a table of rules.

The syntax and the rule table follow llama.cpp's `src/llama-grammar.cpp` (`llama_grammar_parser`), so a
grammar that works there works here and parses to the same table:

    root  ::= item ("," ws item)*     # a rule; `root` is where matching starts
    item  ::= [a-z]+ | "\\u00e9"{1,3}  # alternatives, classes, literals with escapes, repetitions
    ws    ::= [ \\t]?                   # `#` starts a comment; a newline ends a rule outside ( )

A rule is a list of elements `(type, value)`; its alternatives are separated by ALT and it ends with END.
A literal "ab" is CHAR a, CHAR b; a class [^a-cx] is CHAR_NOT a, CHAR_RNG_UPPER c, CHAR_ALT x; `.` is
CHAR_ANY; a reference is RULE_REF id. Groups and repetitions become generated rules named `<rule>_<id>`,
rewritten as llama.cpp does: S{m,n} -> S...S (m times) then n-m nested optional rules; S* -> S' ::= S S' |.
`<[123]>` / `!<[123]>` match one token id / any other token (llama.cpp's token elements); named tokens
(`<think>`) would need the vocabulary while parsing and are refused.

Symbol ids are given in order of first appearance, as llama.cpp gives them. Errors are `GrammarError`s
naming line and column. Bounds keep a hostile grammar within time and memory: llama.cpp's repetition
threshold (2000), a cap on the text, on the table's size and on group nesting.

Left recursion (`expr ::= expr "+" term`) is refused, as llama.cpp refuses it (left_recursion.py).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..errors import GrammarError
from .elements import (ALT, CHAR, CHAR_ALT, CHAR_ANY, CHAR_NOT, CHAR_RNG_UPPER, END, RULE_REF,  # noqa: F401
                       TOKEN, TOKEN_NOT, Element)
from .left_recursion import check_left_recursion

MAX_REPETITION = 2000          # llama.cpp's MAX_REPETITION_THRESHOLD
MAX_GRAMMAR_CHARS = 1 << 20    # grammar text
MAX_ELEMENTS = 1 << 20         # elements in the whole table, after repetitions are expanded
MAX_NESTING = 64               # ( ( ( ... ) ) ) depth
ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def is_word_char(c: str) -> bool:
    """Characters of rule names: ASCII letters, digits and '-' (not '_', as in llama.cpp)."""
    return c != "" and (c.isascii() and c.isalnum() or c == "-")


class Grammar:
    """A parsed grammar: `rules[id]` lists elements, `symbol_ids` maps names (generated ones too) to ids."""

    def __init__(self, rules: List[List[Element]], symbol_ids: Dict[str, int], root: str):
        self.rules = rules
        self.symbol_ids = symbol_ids
        self.names = {i: name for name, i in symbol_ids.items()}
        if root not in symbol_ids:
            raise GrammarError("the grammar has no rule %r to start from" % root)
        self.root = symbol_ids[root]
        check_left_recursion(rules, self.names)

    @classmethod
    def parse(cls, text: str, root: str = "root") -> "Grammar":
        parser = Parser(text)
        parser.parse()
        return cls(parser.rules, parser.symbol_ids, root)


class Parser:
    """A recursive-descent reader of GBNF text; `rules` and `symbol_ids` are its result."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise GrammarError("a grammar must be text, not %s" % type(text).__name__)
        if len(text) > MAX_GRAMMAR_CHARS:
            raise GrammarError("the grammar has %d characters, more than the %d allowed"
                               % (len(text), MAX_GRAMMAR_CHARS))
        self.text = text
        self.pos = 0
        self.rules: List[List[Element]] = []
        self.symbol_ids: Dict[str, int] = {}
        self.n_elements = 0

    # -- errors and characters ----------------------------------------------------------------------

    def error(self, message: str, pos: Optional[int] = None) -> GrammarError:
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        near = self.text[pos:pos + 20].split("\n")[0]
        return GrammarError("line %d, column %d: %s%s" % (line, column, message,
                                                         " at %r" % near if near else " at the end"))

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def skip_space(self, newline_ok: bool) -> None:
        """Spaces, tabs and comments; newlines too where `newline_ok` (inside groups, after `|` and `::=`)."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c == "#":
                while self.pos < n and text[self.pos] not in "\r\n":
                    self.pos += 1
            elif c in " \t" or (newline_ok and c in "\r\n"):
                self.pos += 1
            else:
                break

    def name(self) -> str:
        start = self.pos
        while is_word_char(self.peek()):
            self.pos += 1
        if self.pos == start:
            raise self.error("expecting a name")
        return self.text[start:self.pos]

    def integer(self) -> int:
        start = self.pos
        while self.peek().isdigit() and self.peek().isascii():
            self.pos += 1
        if self.pos == start:
            raise self.error("expecting an integer")
        return int(self.text[start:self.pos])

    def char(self) -> int:
        """One character of a literal or class, escapes decoded: \\n \\t \\r \\\\ \\" \\[ \\] \\- \\xHH \\uHHHH
        \\UHHHHHHHH."""
        c = self.peek()
        if c == "":
            raise self.error("unexpected end of input")
        if c != "\\":
            self.pos += 1
            return ord(c)
        kind = self.peek(1)
        if kind in ESCAPES:
            self.pos += 2
            return ord(ESCAPES[kind])
        if kind in HEX_DIGITS:
            size = HEX_DIGITS[kind]
            digits = self.text[self.pos + 2:self.pos + 2 + size]
            if len(digits) != size or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error("expecting %d hex digits after \\%s" % (size, kind))
            self.pos += 2 + size
            return int(digits, 16)
        raise self.error("unknown escape")

    # -- rules ------------------------------------------------------------------------------------

    def symbol_id(self, name: str) -> int:
        return self.symbol_ids.setdefault(name, len(self.symbol_ids))

    def new_symbol(self, base: str) -> int:
        new_id = len(self.symbol_ids)
        self.symbol_ids["%s_%d" % (base, new_id)] = new_id
        return new_id

    def add_rule(self, rule_id: int, rule: List[Element]) -> None:
        self.n_elements += len(rule)
        if self.n_elements > MAX_ELEMENTS:
            raise self.error("the grammar expands to more than %d elements" % MAX_ELEMENTS)
        while len(self.rules) <= rule_id:
            self.rules.append([])
        self.rules[rule_id] = rule

    def parse(self) -> None:
        self.skip_space(True)
        while self.pos < len(self.text):
            self.rule()
        for rule_id, rule in enumerate(self.rules):
            if not rule:
                raise GrammarError("rule %r is used but never defined" % self.name_of(rule_id))
        for name, rule_id in self.symbol_ids.items():
            if rule_id >= len(self.rules):
                raise GrammarError("rule %r is used but never defined" % name)

    def name_of(self, rule_id: int) -> str:
        return next(name for name, i in self.symbol_ids.items() if i == rule_id)

    def rule(self) -> None:
        name = self.name()
        self.skip_space(False)
        rule_id = self.symbol_id(name)
        if self.text[self.pos:self.pos + 3] != "::=":
            raise self.error("expecting ::=")
        self.pos += 3
        self.skip_space(True)
        self.alternates(name, rule_id, nested=False, depth=0)
        if self.peek() == "\r":
            self.pos += 2 if self.peek(1) == "\n" else 1
        elif self.peek() == "\n":
            self.pos += 1
        elif self.peek():
            raise self.error("expecting a newline or the end")
        self.skip_space(True)

    def alternates(self, name: str, rule_id: int, nested: bool, depth: int) -> None:
        if depth > MAX_NESTING:
            raise self.error("groups nested more than %d deep" % MAX_NESTING)
        rule: List[Element] = []
        self.sequence(name, rule, nested, depth)
        while self.peek() == "|":
            rule.append((ALT, 0))
            self.pos += 1
            self.skip_space(True)
            self.sequence(name, rule, nested, depth)
        rule.append((END, 0))
        self.add_rule(rule_id, rule)

    def sequence(self, name: str, rule: List[Element], nested: bool, depth: int) -> None:
        """Elements up to `|`, `)` or the end of the rule, repetitions applied to the item before them."""
        last_start = len(rule)  # where the last item (the one a repetition applies to) begins
        n_prev_rules = 1        # how many rules the last item stands for: repeating it multiplies them
        while True:
            c = self.peek()
            if c == '"':
                self.pos += 1
                last_start, n_prev_rules = len(rule), 1
                while self.peek() != '"':
                    rule.append((CHAR, self.char()))
                self.pos += 1
            elif c == "[":
                self.pos += 1
                kind = CHAR
                if self.peek() == "^":
                    self.pos += 1
                    kind = CHAR_NOT
                last_start, n_prev_rules = len(rule), 1
                while self.peek() != "]":
                    rule.append((kind if len(rule) == last_start else CHAR_ALT, self.char()))
                    if self.peek() == "-" and self.peek(1) != "]":
                        if self.peek(1) == "":
                            raise self.error("unexpected end of input")
                        self.pos += 1
                        rule.append((CHAR_RNG_UPPER, self.char()))
                self.pos += 1
            elif c in ("<", "!"):
                kind = TOKEN
                if c == "!":
                    kind = TOKEN_NOT
                    self.pos += 1
                last_start, n_prev_rules = len(rule), 1
                rule.append((kind, self.token_id()))
            elif is_word_char(c):
                ref = self.symbol_id(self.name())
                last_start, n_prev_rules = len(rule), 1
                rule.append((RULE_REF, ref))
            elif c == "(":
                self.pos += 1
                self.skip_space(True)
                n_before = len(self.symbol_ids)
                sub_id = self.new_symbol(name)
                self.alternates(name, sub_id, nested=True, depth=depth + 1)
                n_prev_rules = max(1, len(self.symbol_ids) - n_before)
                last_start = len(rule)
                rule.append((RULE_REF, sub_id))
                if self.peek() != ")":
                    raise self.error("expecting ')'")
                self.pos += 1
            elif c == ".":
                self.pos += 1
                last_start, n_prev_rules = len(rule), 1
                rule.append((CHAR_ANY, 0))
            elif c in ("*", "+", "?", "{"):
                at = self.pos
                low, high = self.repetition_bounds(nested)
                n_prev_rules = self.repeat(name, rule, last_start, n_prev_rules, low, high, at)
                continue  # repetition_bounds skipped the space after it
            else:
                return
            self.skip_space(nested)

    def token_id(self) -> int:
        """`<[123]>`; named tokens `<think>` need a vocabulary, which a grammar parsed on its own lacks."""
        if self.text[self.pos:self.pos + 2] != "<[":
            raise self.error("expecting a token id like <[123]> (named tokens are not supported)")
        self.pos += 2
        value = self.integer()
        if self.text[self.pos:self.pos + 2] != "]>":
            raise self.error("expecting ]>")
        self.pos += 2
        return value

    def repetition_bounds(self, nested: bool) -> Tuple[int, Optional[int]]:
        """(min, max) of `*`, `+`, `?` or `{m}`, `{m,}`, `{m,n}`; max None is unbounded."""
        c = self.peek()
        self.pos += 1
        self.skip_space(nested)
        if c != "{":
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        if not self.peek().isdigit():
            raise self.error("expecting an integer")
        low = self.integer()
        self.skip_space(nested)
        high: Optional[int] = low
        if self.peek() == ",":
            self.pos += 1
            self.skip_space(nested)
            high = self.integer() if self.peek().isdigit() else None
            self.skip_space(nested)
        elif self.peek() != "}":
            raise self.error("expecting ',' or '}'")
        if self.peek() != "}":
            raise self.error("expecting '}'")
        self.pos += 1
        self.skip_space(nested)
        if low > MAX_REPETITION:
            raise self.error("%d repetitions are more than the %d allowed" % (low, MAX_REPETITION))
        if high is not None and high > MAX_REPETITION:
            high = None  # as llama.cpp: a huge maximum means no maximum
        return low, high

    def repeat(self, name: str, rule: List[Element], last_start: int, n_prev_rules: int,
               low: int, high: Optional[int], at: int) -> int:
        """Rewrite the last item S as S{low,high}, in place; returns the rule count for the next repetition.

        S{m,n} -> S (m times) S'(n-m), with S'(k) ::= S S'(k-1) | and S'(1) ::= S |
        S{m,}  -> S (m times) S',      with S' ::= S S' |
        """
        if last_start == len(rule):
            raise self.error("expecting an item before */+/?/{", at)
        item = rule[last_start:]
        total = high if high else (low if low > 0 else 1)
        if n_prev_rules * total > MAX_REPETITION:
            raise self.error("repeating this item expands to more than %d rules" % MAX_REPETITION, at)
        if len(rule) + len(item) * low > MAX_ELEMENTS:
            raise self.error("the grammar expands to more than %d elements" % MAX_ELEMENTS, at)
        del rule[last_start:]
        rule.extend(item * low)
        n_optional = 1 if high is None else high - low
        last_id = 0
        for i in range(n_optional):
            rec_id = self.new_symbol(name)
            rec_rule = list(item)
            if high is None:
                rec_rule.append((RULE_REF, rec_id))
            elif i > 0:
                rec_rule.append((RULE_REF, last_id))
            self.add_rule(rec_id, rec_rule + [(ALT, 0), (END, 0)])
            last_id = rec_id
        if n_optional > 0:
            rule.append((RULE_REF, last_id))
        return n_prev_rules * total

