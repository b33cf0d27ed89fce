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
from llama_cpp_grammar_cases import schema_converter_cases

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
    {"type": "array", "items": {"type": "boolean"}, "maxItems": 0},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "null"}]},
    {"type": ["string", "null"], "maxLength": 3}, {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]},
    {"oneOf": [{"type": "boolean"}, ADDRESS]}, ADDRESS,
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
     "required": ["b"], "additionalProperties": False},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}},
    {"type": "object", "properties": {"id": {"type": "string"}}, "additionalProperties": True},
    {"type": "object", "additionalProperties": False},
    {"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
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
    for text in ['{}', '{"a": [1, {"b": null}], "c": "d"}', '{ "x": -1.5e3 }']:
        assert matcher.allows_end(matcher.accept_text(matcher.initial, text)), text
    for text in ['[]', '"s"', '1', '{"a"}', '{"a": 1,}']:
        assert not matcher.allows_end(matcher.accept_text(matcher.initial, text)), text


@pytest.mark.parametrize("schema,keyword", [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "number", "minimum": 0.5}, "minimum"),
    ({"type": "string", "format": "hostname"}, "hostname"),
    ({"type": "string", "pattern": "^a(?=b)$"}, "lookaround"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "escape"),
    ({"not": {"type": "string"}}, "not"),
    ({"$ref": "https://example.com/s.json"}, "https://example.com"),
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "allOf"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ({"type": "string", "maxLength": "9"}, "maxLength must be a non-negative integer"),
    ({"type": "array", "minItems": -1}, "minItems must be a non-negative integer"),
    ({"type": "integer", "minimum": "0"}, "minimum must be a number"),
])
def test_unsupported_or_malformed_keywords_are_named(schema, keyword):
    with pytest.raises(GrammarError, match=keyword):
        schema_to_gbnf(schema)


# -- llama.cpp's converter test (tests/test-json-schema-to-grammar.cpp) as data --------------------------

CONVERTER_CASES = schema_converter_cases()
# Cases we refuse on purpose (the keyword the error names): llama.cpp accepts any string for a pattern it
# cannot express, and reads a schema given as prefixItems (an array in JSON Schema) as `items`.
REFUSED = {"unsupported regexp in a property": "lookaround", "string array": "prefixItems",
           "nullable string array": "prefixItems", "array with empty items and prefixItems": "prefixItems"}
# Cases where llama.cpp's grammar is no reference: it writes a pattern's `"` unescaped (invalid JSON); it
# names the rule of the property "" `root`, so its root accepts integers only (which that schema, having
# no "type", allows: we read properties as "an object"); it makes allOf members' properties required.
THEIRS_WRONG = {"regexp quote", "optional props with empty name",
                "mix of allOf, anyOf and $ref (similar to https://json.schemastore.org/tsconfig.json)"}


def accepts(matcher: Matcher, text: str) -> bool:
    return matcher.allows_end(matcher.accept_text(matcher.initial, text))


def compact(text: str) -> str:
    """JSON text without whitespace outside strings (the two converters place optional spaces differently)."""
    out, in_string, escaped = [], False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c in " \t\n\r":
            continue
        else:
            in_string = c == '"'
        out.append(c)
    return "".join(out)


@pytest.mark.parametrize("case", CONVERTER_CASES, ids=lambda c: c["name"])
def test_llama_cpp_converter_cases(case):
    """llama.cpp's grammar for each schema parses here, and ours is refused where theirs is. Otherwise our random
    texts are valid (jsonschema) and llama.cpp's grammar accepts them; its random texts that are valid, we accept."""
    if not case["succeeds"] or case["name"] in REFUSED:
        with pytest.raises((GrammarError, ValueError), match=REFUSED.get(case["name"])):
            schema_to_gbnf(json.loads(case["schema"]))
        return
    theirs = Matcher(Grammar.parse(case["grammar"]))
    schema = json.loads(case["schema"])
    ours = Matcher(Grammar.parse(schema_to_gbnf(schema)))
    rng = random.Random(99)
    draft = jsonschema.Draft202012Validator if "prefixItems" in case["schema"] else jsonschema.Draft7Validator
    validator = draft(schema, format_checker=draft.FORMAT_CHECKER)  # draft 7: "items" may be a list (a tuple)

    def valid(text):
        try:
            return not list(validator.iter_errors(json.loads(text)))
        except ValueError:
            return False
    for _ in range(15):
        text = random_text(ours, rng, rng.choice([0, 10, 40]))
        assert valid(text), text
        assert case["name"] in THEIRS_WRONG or accepts(theirs, text), text
        their_text = random_text(theirs, rng, rng.choice([0, 10, 40]))
        assert case["name"] in THEIRS_WRONG or not valid(their_text) or accepts(ours, compact(their_text)), their_text
