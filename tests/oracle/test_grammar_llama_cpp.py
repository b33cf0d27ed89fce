"""Our GBNF parser and matcher against llama.cpp's own grammar tests, read as data from its sources.

Every case of tests/test-grammar-parser.cpp and tests/test-grammar-integration.cpp (as shipped in
node-llama-cpp's bundle) must come out as it does in llama.cpp: the same parse failures, the same rule
table (symbol ids and elements), the same strings accepted and rejected, JSON-schema cases through our
own converter. The few cases written as separate C++ functions are ported by hand below, each citing it.
"""
from __future__ import annotations

import json

import pytest
from llama_cpp_grammar_cases import Token, integration_cases, parser_cases, source_dir

from pychat_wasm.errors import GrammarError
from pychat_wasm.grammar import gbnf
from pychat_wasm.grammar.gbnf import Grammar, Parser
from pychat_wasm.grammar.json_schema import schema_to_gbnf
from pychat_wasm.grammar.matcher import Matcher

PARSER = parser_cases()
INTEGRATION = integration_cases()
GRETYPES = {"LLAMA_GRETYPE_" + name: getattr(gbnf, name) for name in
            ("END", "ALT", "RULE_REF", "CHAR", "CHAR_NOT", "CHAR_RNG_UPPER", "CHAR_ALT", "CHAR_ANY", "TOKEN",
             "TOKEN_NOT")}
# Schemas whose keywords llama.cpp ignores but we refuse, so that a grammar never promises more than it
# enforces: "required props" has `exclusiveMinimum` on a number and `uniqueItems` (llama.cpp's own TODOs
# there say both pass strings they should fail).
REFUSED_SCHEMAS = {"required props": "exclusiveMinimum"}


def test_the_suite_is_there():
    assert len(PARSER["failures"]) >= 6 and len(PARSER["parsings"]) >= 15
    assert len([c for c in INTEGRATION if c["kind"] == "grammar"]) >= 14
    assert len([c for c in INTEGRATION if c["kind"] == "schema"]) >= 30


@pytest.mark.parametrize("text", PARSER["failures"])
def test_parser_failures(text):
    with pytest.raises(GrammarError):
        Grammar.parse(text)


@pytest.mark.parametrize("text,symbols,elements", PARSER["parsings"], ids=lambda v: None)
def test_parser_builds_llama_cpp_rule_table(text, symbols, elements):
    """verify_parsing: the same symbol ids and, rule after rule, the same elements."""
    parser = Parser(text)
    parser.parse()
    assert parser.symbol_ids == symbols
    flat = [element for rule in parser.rules for element in rule]
    assert flat == [(GRETYPES[kind], value) for kind, value in elements]


def match_string(matcher: Matcher, pieces) -> bool:
    """test-grammar-integration.cpp's match_string: each character is token 0, token(N) is token N."""
    state, partial = matcher.initial, None
    for piece in pieces:
        units = [(piece.id, "<[%d]>" % piece.id)] if isinstance(piece, Token) else [(0, c) for c in piece]
        for token_id, text in units:
            state, partial = matcher.accept_piece(state, partial, token_id, text.encode("utf-8"))
            if state == matcher.dead:
                return False
    return matcher.allows_end(state)


@pytest.mark.parametrize("case", INTEGRATION, ids=lambda c: "%s:%s" % (c["kind"], c["name"]))
def test_integration_strings(case):
    if case["kind"] == "schema" and case["name"] in REFUSED_SCHEMAS:
        with pytest.raises(GrammarError, match=REFUSED_SCHEMAS[case["name"]]):
            schema_to_gbnf(json.loads(case["source"]))
        return
    text = case["source"] if case["kind"] == "grammar" else schema_to_gbnf(json.loads(case["source"]))
    matcher = Matcher(Grammar.parse(text))
    wrong = [("should pass", p) for p in case["passing"] if not match_string(matcher, p)]
    wrong += [("should fail", p) for p in case["failing"] if match_string(matcher, p)]
    assert not wrong, "%s\n%s" % (wrong, text)


@pytest.mark.parametrize("name", sorted(p.name for p in (source_dir() / "grammars").glob("*.gbnf")))
def test_shipped_grammars_parse(name):
    Matcher(Grammar.parse((source_dir() / "grammars" / name).read_text(encoding="utf-8")))


# -- ported by hand: the cases test-grammar-integration.cpp writes as their own functions ---------------

def test_failure_missing_root():
    with pytest.raises(GrammarError, match="root"):
        Grammar.parse('rot ::= expr\nexpr ::= term ("+" term)*\nterm ::= number\nnumber ::= [0-9]+')


def test_failure_missing_reference():
    with pytest.raises(GrammarError, match="numero"):
        Grammar.parse('root ::= expr\nexpr ::= term ("+" term)*\nterm ::= numero\nnumber ::= [0-9]+')


@pytest.mark.parametrize("text", [
    'root ::= "a" | root "a"',
    'root ::= asdf\nasdf ::= "a" | asdf "a"',
    'root ::= asdf\nasdf ::= "a" | foo "b"\nfoo ::= "c" | asdf "d" | "e"',
    'root ::= asdf\nasdf ::= "a" | foo "b"\nfoo ::= "c" | empty asdf "d" | "e"\nempty ::= "blah" | ',
])
def test_failure_left_recursion(text):
    with pytest.raises(GrammarError, match="left-recursive"):
        Grammar.parse(text)


def test_missing_and_custom_root_symbol():
    with pytest.raises(GrammarError, match="nonexistent"):
        Grammar.parse('root ::= "foobar"', root="nonexistent")
    with pytest.raises(GrammarError):
        Grammar.parse('foobar ::= "foobar"')
    matcher = Matcher(Grammar.parse('foobar ::= "foobar"', root="foobar"))
    assert match_string(matcher, ["foobar"]) and not match_string(matcher, ["foo"])
