"""JSON Schema -> GBNF: a grammar whose every complete match is JSON valid under the schema.

Covers what OpenAI's structured outputs (strict mode) and llama.cpp's converter
(common/json-schema-to-grammar.cpp) accept, with llama.cpp's conventions so the same text passes:
- objects: `properties` in schema order, the required ones first (in their order), then any subset of
  the optional ones (in their order); `additionalProperties` false or absent allows no other key, true or
  a schema allows other keys (none equal to a named one) after the named ones;
- strings: enum, const, pattern (json_patterns.py), minLength/maxLength, format date, time, date-time,
  uuid, email; integers with minimum/maximum/exclusive* (json_numbers.py); number; boolean; null;
- arrays: items (a schema, or a list = a tuple), prefixItems, minItems/maxItems;
- anyOf/oneOf; allOf of enums (their common values) or of objects (merged, members of an anyOf inside
  optional); type lists; $ref to any place in the schema (#/$defs/x; recursion ok);
- whitespace as llama.cpp places it: `space` (nothing, a space, or up to two newlines and 20 indentation
  characters) after { [ , : and before } ], none around the whole value.
A keyword that constrains values but is not listed here (uniqueItems, minimum on a number, ...) is a
GrammarError naming it: the grammar never promises more than it enforces. Annotations are ignored.

    >>> print(schema_to_gbnf({"type": "object", "properties": {"ok": {"type": "boolean"}},
    ...                       "required": ["ok"], "additionalProperties": False}))  # doctest: +NORMALIZE_WHITESPACE
    space ::= | " " | "\\n"{1,2} [ \\t]{0,20}
    boolean ::= ("true" | "false")
    root-ok-kv ::= "\\"ok\\"" space ":" space boolean
    root ::= "{" space root-ok-kv space "}"
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from ..errors import GrammarError
from .json_numbers import int_range
from .json_patterns import gbnf_literal, pattern_to_gbnf

BUILTINS = {
    "space": ('| " " | "\\n"{1,2} [ \\t]{0,20}', []),
    "char": ('[^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})', []),
    "string": ('"\\"" char* "\\""', ["char"]),
    "integral-part": ("[0] | [1-9] [0-9]{0,15}", []),
    "number": ('("-"? integral-part) ("." [0-9]{1,16})? ([eE] [-+]? integral-part)?', ["integral-part"]),
    "integer": ('("-"? integral-part)', ["integral-part"]),
    "boolean": ('("true" | "false")', []),
    "null": ('"null"', []),
    "value": ("object | array | string | number | boolean | null",
              ["object", "array", "string", "number", "boolean", "null"]),
    "object": ('"{" space (string ":" space value ("," space string ":" space value)*)? space "}"',
               ["string", "value"]),
    "array": ('"[" space (value ("," space value)*)? space "]"', ["value"]),
    "date": ('[1-9] [0-9]{3} "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1]) | '
             '("0" [469] | "11") "-" ("0" [1-9] | [1-2] [0-9] | "30") | "02-" ("0" [1-9] | "1" [0-9] | "2" [0-8]))',
             []),  # real days only: February stops at 28, as the grammar cannot know leap years
    "time": ('([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? '
             '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])', []),
    "date-time": ('date "T" time', ["date", "time"]),
    "uuid": ('[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}', []),
    "email": ('[a-zA-Z0-9._%+-]+ "@" [a-zA-Z0-9-]+ ("." [a-zA-Z0-9-]+)+', []),
}
FORMATS = ("date", "time", "date-time", "uuid", "email")
ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated",
               "readOnly", "writeOnly", "$defs", "definitions"}
SUPPORTED = ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "items", "prefixItems",
                           "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "pattern",
                           "minLength", "maxLength", "format", "minimum", "maximum", "exclusiveMinimum",
                           "exclusiveMaximum"}
KEYWORDS_OF_TYPE = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "string": {"pattern", "minLength", "maxLength", "format"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
}


def schema_to_gbnf(schema: Any) -> str:
    """The GBNF text for `schema` (a dict, or True/{} for any JSON value); GrammarError if unsupported."""
    return SchemaConverter(schema).convert()


def json_object_gbnf() -> str:
    """Any JSON object: OpenAI's response_format {"type": "json_object"}."""
    return SchemaConverter({"type": "object", "additionalProperties": True}).convert()


class SchemaConverter:
    def __init__(self, schema: Any):
        self.schema = schema
        self.rules: Dict[str, str] = {}

    def convert(self) -> str:
        self.builtin("space")
        root = self.visit(self.schema, "root")
        if root != "root":
            self.rules = {"root": root, **self.rules}
        return "\n".join("%s ::= %s" % (name, body) for name, body in self.rules.items()) + "\n"

    # -- rules ------------------------------------------------------------------------------------

    def rule(self, name: str, body: str) -> str:
        """Add `name ::= body` (renamed name-2, name-3... if the name holds another body); returns the name."""
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "r"
        name, n = base, 1
        while name in self.rules and self.rules[name] != body:
            n += 1
            name = "%s-%d" % (base, n)
        self.rules[name] = body
        return name

    def builtin(self, name: str) -> str:
        body, needs = BUILTINS[name]
        if name not in self.rules:
            self.rules[name] = body
            for other in needs:
                self.builtin(other)
        return name

    # -- schemas ----------------------------------------------------------------------------------

    def visit(self, schema: Any, name: str) -> str:
        """A GBNF expression (usually a rule name) matching the JSON values valid under `schema`."""
        if schema is True or (isinstance(schema, dict) and not set(schema) - ANNOTATIONS):
            return self.rule(name, self.builtin("value")) if name == "root" else self.builtin("value")
        if not isinstance(schema, dict):
            raise GrammarError("a schema must be an object or true, not %r" % (schema,))
        unknown = sorted(set(schema) - SUPPORTED)
        if unknown:
            raise GrammarError("JSON schema keyword %s is not supported (at %s)"
                               % (", ".join(map(repr, unknown)), name))
        if "$ref" in schema:
            return self.ref(schema["$ref"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self.visit(s, "%s-%d" % (name, i)) for i, s in enumerate(schema[key])]
                return self.rule(name, " | ".join(options))
        if "allOf" in schema:
            return self.visit(self.merge_all_of(schema, name), name)
        if "const" in schema:
            return self.rule(name, self.literal(schema["const"]))
        if "enum" in schema:
            return self.rule(name, " | ".join(self.literal(v) for v in schema["enum"]))
        kind = schema["type"] if "type" in schema else self.implied_type(schema)
        kinds = kind if isinstance(kind, list) else [kind]
        used = set(schema) - ANNOTATIONS - {"type"}
        wrong = sorted(used - set().union(*(KEYWORDS_OF_TYPE.get(k, set()) for k in kinds)))
        if wrong:
            raise GrammarError("JSON schema keyword %s is not supported for type %r (at %s)"
                               % (", ".join(map(repr, wrong)), kind, name))
        if isinstance(kind, list):  # each type with its own keywords
            return self.rule(name, " | ".join(self.visit(
                {**{key: v for key, v in schema.items() if key not in used - KEYWORDS_OF_TYPE.get(k, set())},
                 "type": k}, "%s-%s" % (name, k)) for k in kind))
        if kind == "object":
            return self.rule(name, self.object(schema, name))
        if kind == "array":
            return self.rule(name, self.array(schema, name))
        if kind == "string":
            return self.rule(name, self.string(schema, name))
        if kind == "integer" and used:
            return self.rule(name, self.integer(schema))
        if kind in ("integer", "number", "boolean", "null"):
            return self.rule(name, self.builtin(kind)) if name == "root" else self.builtin(kind)
        raise GrammarError("unknown JSON schema type %r (at %s)" % (kind, name))

    @staticmethod
    def implied_type(schema: Dict[str, Any]) -> Optional[str]:
        for kind, keys in KEYWORDS_OF_TYPE.items():
            if keys & set(schema):
                return kind
        raise GrammarError("a schema without a type, const, enum, anyOf or $ref: %s" % json.dumps(schema)[:200])

    def literal(self, value: Any) -> str:
        return gbnf_literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def resolve(self, ref: Any) -> Any:
        """The schema a reference ("#", "#/$defs/node", "#/properties/a/anyOf/0") points to in this schema."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise GrammarError("$ref %r: only references inside the schema (#/...) are supported" % (ref,))
        target = self.schema
        for part in [p.replace("~1", "/").replace("~0", "~") for p in ref[1:].split("/")[1:]]:
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise GrammarError("$ref %r points to nothing in the schema" % ref)
        return target

    def ref(self, ref: Any) -> str:
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", "ref" + str(ref)[1:]).strip("-")
        if name not in self.rules:
            target = self.resolve(ref)
            self.rules[name] = "(pending)"  # claims the name, so that a recursive reference ends here
            self.rules[name] = self.visit(target, name + "-body")
        return name

    def merge_all_of(self, schema: Dict[str, Any], name: str) -> Dict[str, Any]:
        """One schema for allOf: the values common to enums, or one object with every member's properties."""
        parts = [self.resolve(p["$ref"]) if isinstance(p, dict) and set(p) == {"$ref"} else p for p in schema["allOf"]]
        rest = {k: v for k, v in schema.items() if k != "allOf" and k not in ANNOTATIONS}
        parts += [rest] if set(rest) - {"type"} else []
        if parts and all(isinstance(p, dict) and ("enum" in p or "const" in p) for p in parts):
            values = [p["enum"] if "enum" in p else [p["const"]] for p in parts]
            return {"enum": [v for v in values[0] if all(v in others for others in values[1:])]}
        merged: Dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in parts:
            members = [self.resolve(m["$ref"]) if set(m) == {"$ref"} else m for m in part.get("anyOf", [])]
            if not isinstance(part, dict) or part.get("type", "object") != "object" or set(part) - {
                    "type", "properties", "required", "anyOf", "additionalProperties"} - ANNOTATIONS:
                raise GrammarError("allOf is supported for enums and objects only (at %s)" % name)
            for member in [part] + members:
                merged["properties"].update(member.get("properties", {}))
            merged["required"] += [k for k in part.get("required", []) if k not in merged["required"]]
            if "additionalProperties" in part:
                merged["additionalProperties"] = part["additionalProperties"]
        return merged

    # -- types ------------------------------------------------------------------------------------

    def object(self, schema: Dict[str, Any], name: str) -> str:
        properties: Dict[str, Any] = schema.get("properties", {})
        required = list(schema.get("required", []))
        # as llama.cpp: other keys are refused unless allowed, except in an object that names no property
        extra = schema.get("additionalProperties", "properties" not in schema)
        for key in required:
            if key not in properties:
                if extra is False:
                    raise GrammarError("required property %r is not among the properties (at %s)" % (key, name))
                properties = {**properties, key: extra if isinstance(extra, dict) else {}}
        kvs = {key: self.rule("%s-%s-kv" % (name, key), "%s %s \":\" %s %s" % (
            gbnf_literal(json.dumps(key, ensure_ascii=False)), self.builtin("space"), self.builtin("space"),
            self.visit(value, "%s-%s" % (name, key)))) for key, value in properties.items()}
        must = [kvs[k] for k in properties if k in required]
        optional = [kvs[k] for k in properties if k not in required]
        if extra is not False:
            extra_kv = self.rule(name + "-additional-kv", '%s ":" space %s' % (
                self.not_strings(list(properties), name + "-additional-key"), self.visit(extra, name + "-additional")))
            optional.append(self.rule(name + "-additional-kvs", '%s ("," space %s)*' % (extra_kv, extra_kv)))
        body = ' "," space '.join(must)
        if optional:
            tail = self.optional_tail(optional, name)
            body = '%s ("," space %s)?' % (body, tail) if must else "(%s)?" % tail
        return '"{" space %s space "}"' % body if body else '"{" space "}"'

    def optional_tail(self, items: List[str], name: str) -> str:
        """Any non-empty in-order subset of `items`, comma-separated: t(i) ::= items[i] ("," t(i+1))? | t(i+1)."""
        tail = ""
        for i in range(len(items) - 1, -1, -1):
            first = items[i] if not tail else '%s ("," space %s)?' % (items[i], tail)
            tail = self.rule("%s-rest-%d" % (name, i), first + (" | " + tail if tail else ""))
        return tail

    def not_strings(self, names: List[str], name: str) -> str:
        """A JSON string key other than each of `names` (a trie: leave it at a char that no name continues with)."""
        trie: Dict[str, Any] = {}
        for word in names:
            node = trie
            for c in word:
                node = node.setdefault(c, {})
            node[""] = {}

        def rest(node: Dict[str, Any]) -> str:
            chars = "".join(c if c not in "]\\-^" else "\\" + c for c in sorted(node) if c)
            alternatives = ["%s %s" % (gbnf_literal(c), rest(child)) for c, child in sorted(node.items()) if c]
            alternatives.append('[^"\\\\\\x7F\\x00-\\x1F%s] char* "\\""' % chars)
            if "" not in node:
                alternatives.append('"\\""')
            return "(" + " | ".join(alternatives) + ")"
        self.builtin("char")
        return self.rule(name, '"\\"" %s' % rest(trie))

    def array(self, schema: Dict[str, Any], name: str) -> str:
        items = schema.get("prefixItems", schema.get("items"))
        if "prefixItems" in schema and not isinstance(items, list):
            raise GrammarError("prefixItems must be a list of schemas (at %s)" % name)
        if isinstance(items, list):
            if "prefixItems" in schema and schema.get("items") not in (None, False):
                raise GrammarError("prefixItems with further items is not supported (at %s)" % name)
            parts = [self.visit(s, "%s-%d" % (name, i)) for i, s in enumerate(items)]
            return '"[" space %s space "]"' % ' "," space '.join(parts) if parts else '"[" space "]"'
        item = self.visit(items if items is not None else {}, name + "-item")
        low, high = count(schema, "minItems", 0), count(schema, "maxItems", None)
        if high is not None and high < max(low, 1):
            return '"[" space "]"'
        more = '("," space %s){%d,%s}' % (item, max(low - 1, 0), "" if high is None else high - 1)
        return '"[" space %s %s space "]"' % (item, more) if low else '"[" space (%s %s)? space "]"' % (item, more)

    def string(self, schema: Dict[str, Any], name: str) -> str:
        if sum(k in schema for k in ("pattern", "format")) + ("minLength" in schema or "maxLength" in schema) > 1:
            raise GrammarError("combining pattern, format and lengths in one string is not supported (at %s)" % name)
        if "pattern" in schema:
            inner = pattern_to_gbnf(schema["pattern"])
        elif "format" in schema:
            if schema["format"] not in FORMATS:
                raise GrammarError("string format %r is not supported (supported: %s)"
                                   % (schema["format"], ", ".join(FORMATS)))
            inner = self.builtin(schema["format"])
        else:
            low, high = count(schema, "minLength", 0), count(schema, "maxLength", None)
            inner = "%s{%d,%s}" % (self.builtin("char"), low, "" if high is None else high)
        return '"\\"" %s "\\""' % inner

    def integer(self, schema: Dict[str, Any]) -> str:
        def bound(key: str, exclusive: str, step: int) -> Optional[int]:
            for k in (key, exclusive):
                if k in schema and (isinstance(schema[k], bool) or not isinstance(schema[k], (int, float))):
                    raise GrammarError("%s must be a number, not %r" % (k, schema[k]))
            values = []
            if key in schema:
                values.append(int(-(-schema[key] // 1)) if step > 0 else int(schema[key] // 1))
            if exclusive in schema:
                values.append(int(schema[exclusive] // 1) + 1 if step > 0 else int(-(-schema[exclusive] // 1)) - 1)
            return (max(values) if step > 0 else min(values)) if values else None
        low, high = bound("minimum", "exclusiveMinimum", 1), bound("maximum", "exclusiveMaximum", -1)
        return int_range(low, high)


def count(schema: Dict[str, Any], key: str, default: Optional[int]) -> Optional[int]:
    """A non-negative integer keyword (minLength, maxItems...), or `default` when absent."""
    value = schema.get(key, default)
    if value is not default and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise GrammarError("%s must be a non-negative integer, not %r" % (key, value))
    return value
