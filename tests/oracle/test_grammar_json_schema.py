"""JSON Schema -> GBNF checked by the `jsonschema` package: everything the grammar lets out is valid.

For dozens of schemas, random walks through the grammar (random characters the matcher allows, then the
shortest way to a complete match) produce texts; each must parse as JSON and validate under the schema,
formats included. Schemas with keywords the converter cannot enforce must be refused, naming the keyword.
"""
from __future__ import annotations

import json
import random
from collections import deque

import jsonschema
import pytest

from pychat_wasm.errors import GrammarError
from pychat_wasm.grammar.gbnf import Grammar
from pychat_wasm.grammar.json_schema import json_object_gbnf, schema_to_gbnf
from pychat_wasm.grammar.matcher import Matcher

POOL = [chr(c) for c in range(32, 127)] + ["\n", "\t", "é", "中", "\U0001f600"]
ADDRESS = {"type": "object", "properties": {"street": {"type": "string", "maxLength": 12},
                                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
           "required": ["street", "zip"], "additionalProperties": False}
SCHEMAS = [
    {}, {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": "string", "minLength": 2, "maxLength": 5}, {"type": "string", "enum": ["red", "green", 'a"b']},
    {"const": {"a": [1, 2, None]}}, {"enum": ["x", 1, None, True, [1]]},
    {"type": "string", "format": "date"}, {"type": "string", "format": "date-time"},
    {"type": "string", "format": "time"}, {"type": "string", "format": "uuid"}, {"type": "string", "format": "email"},
    {"type": "string", "pattern": "^(ab|c)+[x-z]?\\d{2,3}$"}, {"type": "string", "pattern": "^[^a-z]{1,4}\\.\\w*$"},
    {"type": "integer", "minimum": -20, "maximum": 345}, {"type": "integer", "exclusiveMinimum": 0},
    {"type": "integer", "maximum": -7}, {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
    {"type": "array", "items": {"type": "boolean"}, "maxItems": 0}, {"type": "array", "prefixItems": [{"type": "string"}, {"type": "null"}]},
    {"type": ["string", "null"], "maxLength": 3}, {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]},
    {"oneOf": [{"type": "boolean"}, ADDRESS]}, ADDRESS,
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
     "required": ["b"], "additionalProperties": False},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}},
    {"type": "object", "properties": {"id": {"type": "string"}}, "additionalProperties": True},
    {"type": "object", "additionalProperties": False},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
                        "required": ["v", "next"], "additionalProperties": False}}, "$ref": "#/$defs/node"},
    {"type": "object", "properties": {"people": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "born": {"type": "string", "format": "date"}}, "required": ["name"]}}},
     "required": ["people"], "additionalProperties": False},
]


def shortest_completion(matcher: Matcher, state: int, limit: int = 400) -> str:
    """The shortest text from `state` to a complete match over POOL's characters (breadth-first)."""
    paths = {state: ""}
    todo = deque([state])
    while todo:
        here = todo.popleft()
        if matcher.allows_end(here):
            return paths[here]
        if len(paths[here]) >= limit:
            continue
        for c in POOL:
            nxt = matcher.step(here, ord(c))
            if nxt != matcher.dead and nxt not in paths:
                paths[nxt] = paths[here] + c
                todo.append(nxt)
    raise AssertionError("no completion within %d characters" % limit)


def random_text(matcher: Matcher, rng: random.Random, steps: int) -> str:
    """Random allowed characters for up to `steps` steps, then the shortest way to the end."""
    text, state = "", matcher.initial
    for _ in range(steps):
        options = [c for c in POOL if matcher.step(state, ord(c)) != matcher.dead]
        if not options or (matcher.allows_end(state) and rng.random() < 0.05):
            break
        c = rng.choice(options)
        text, state = text + c, matcher.step(state, ord(c))
    return text + shortest_completion(matcher, state)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: json.dumps(s)[:60])
def test_random_texts_of_the_grammar_are_valid(schema):
    matcher = Matcher(Grammar.parse(schema_to_gbnf(schema)))
    rng = random.Random(1234)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    texts = {random_text(matcher, rng, rng.choice([0, 5, 20, 80])) for _ in range(25)}
    for text in texts:
        errors = [e.message for e in validator.iter_errors(json.loads(text))]
        assert not errors, (text, errors)


def test_json_object_mode_allows_any_object_only():
    matcher = Matcher(Grammar.parse(json_object_gbnf()))
    for text in ['{}', '{"a": [1, {"b": null}], "c": "d"}', '{ "x" : -1.5e3 }']:
        assert matcher.allows_end(matcher.accept_text(matcher.initial, text)), text
    for text in ['[]', '"s"', '1', '{"a"}', '{"a": 1,}']:
        assert not matcher.allows_end(matcher.accept_text(matcher.initial, text)), text


@pytest.mark.parametrize("schema,keyword", [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "number", "minimum": 0.5}, "minimum"),
    ({"type": "string", "format": "hostname"}, "hostname"),
    ({"type": "string", "pattern": "^a(?=b)$"}, "lookaround"),
    ({"type": "string", "pattern": "abc"}, "anchored"),
    ({"not": {"type": "string"}}, "not"),
    ({"$ref": "https://example.com/s.json"}, "https://example.com"),
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "allOf"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
])
def test_unsupported_keywords_are_named(schema, keyword):
    with pytest.raises(GrammarError, match=keyword):
        schema_to_gbnf(schema)
