"""Bad and hostile grammars: a GrammarError that says where and what, and bounded work, never a hang or a crash.

(What a good grammar means is tested against llama.cpp in tests/oracle/test_grammar_llama_cpp.py.)
"""
from __future__ import annotations

import pytest

from pychat_wasm.errors import GrammarError, PychatError
from pychat_wasm.grammar.gbnf import MAX_GRAMMAR_CHARS, Grammar
from pychat_wasm.grammar.matcher import Matcher


@pytest.mark.parametrize("text,where,what", [
    ('root ::= "a"\nitem ::= [a-', "line 2, column 12", "unexpected end"),
    ('root ::= "a" )', "line 1, column 14", "expecting a newline"),
    ('root ::= "\\q"', "line 1, column 11", "unknown escape"),
    ('root ::= "\\x4"', "line 1, column 11", "2 hex digits"),
    ('root ::= *"a"', "line 1, column 10", "expecting an item"),
    ('root ::= "a"{2,x}', "line 1, column 16", "expecting '}'"),
    ('root := "a"', "line 1, column 6", "expecting ::="),
    ('root ::= ("a" "b"\n', "line 2, column 1", "expecting ')'"),
    ('root ::= <think>', "line 1, column 10", "named tokens"),
    ('my_rule ::= "a"', "line 1, column 3", "expecting ::="),  # '_' is not a name character, as in llama.cpp
])
def test_malformed_grammars_name_line_and_column(text, where, what):
    with pytest.raises(GrammarError) as error:
        Grammar.parse(text)
    assert where in str(error.value) and what in str(error.value)
    assert isinstance(error.value, PychatError) and isinstance(error.value, ValueError)


def test_undefined_rules_and_roots_are_named():
    with pytest.raises(GrammarError, match="'valeu' is used but never defined"):
        Grammar.parse("root ::= valeu\nvalue ::= [0-9]")
    with pytest.raises(GrammarError, match="no rule 'start'"):
        Grammar.parse('root ::= "a"', root="start")
    with pytest.raises(GrammarError, match="'list' is left-recursive"):
        Grammar.parse('root ::= list\nlist ::= item | list "," item\nitem ::= [a-z]+')
    with pytest.raises(GrammarError, match="must be text"):
        Grammar.parse(b'root ::= "a"')


@pytest.mark.parametrize("text,what", [
    ("x" * (MAX_GRAMMAR_CHARS + 1), "characters"),
    ('root ::= "a"{2001}', "repetitions"),
    ('root ::= (("a"{0,100}){0,100})', "more than 2000 rules"),
    ('root ::= "%s"{2000}' % ("a" * 1000), "elements"),
    ("root ::= " + "(" * 200 + '"a"' + ")" * 200, "nested"),
])
def test_grammars_too_large_are_refused_before_expanding(text, what):
    with pytest.raises(GrammarError, match=what):
        Grammar.parse(text)


def test_too_ambiguous_grammars_stop_with_an_error():
    """2000 optional items in a row: reading one "a" could leave off at any of them, from any of them."""
    matcher = Matcher(Grammar.parse('root ::= ([a]?){1000} ([a]?){1000} "b"'))
    with pytest.raises(GrammarError, match="too ambiguous"):
        matcher.accept_text(matcher.initial, "aaaa")


def test_tail_recursion_through_an_empty_rule_is_no_left_recursion():
    """llama.cpp's "segfault" case: ( [x]* )* loops on the empty string without growing the stacks."""
    matcher = Matcher(Grammar.parse("root ::= ( [x]* )*"))
    assert matcher.allows_end(matcher.accept_text(matcher.initial, "xxx"))
    assert matcher.accept_text(matcher.initial, "xy") == matcher.dead
