"""llama.cpp's grammar tests as data: read from its C++ sources in node-llama-cpp's git bundle.

Files are taken out of the bundle once into .cache/llama.cpp-grammar/<commit>/ (as llama_cpp_vocabs.py
does for the tokenizer suite). The C++ test calls are read with a small lexer that knows the literals
they use: raw strings R\"\"\"(...)\"\"\", "..." strings with escapes, token(N) (llama.cpp's 5-byte token
marker, here a `Token`), `+` concatenation, `{...}` lists, character literals and enum names.

- tests/test-grammar-parser.cpp: verify_failure(grammar) and verify_parsing(grammar, {symbol ids}, {elements});
- tests/test-grammar-integration.cpp: test_grammar / test_schema(description, grammar or schema,
  {passing strings}, {failing strings}); a string is a list of text pieces and Tokens;
- tests/test-json-schema-to-grammar.cpp: test({SUCCESS or FAILURE, name, schema, llama.cpp's grammar}).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, NamedTuple

from llama_cpp_vocabs import BUNDLE, _git

from conftest import REPO

CACHE = REPO / ".cache" / "llama.cpp-grammar"
FILES = ("tests/test-grammar-parser.cpp", "tests/test-grammar-integration.cpp", "tests/test-json-schema-to-grammar.cpp")


class Token(NamedTuple):
    id: int


def source_dir() -> Path:
    """A directory with the test sources and grammars/*.gbnf, taken out of the bundle on first use."""
    (commit, _), = [line.split() for line in _git("bundle", "list-heads", str(BUNDLE), cwd=REPO).decode().splitlines()
                    if line.endswith(" HEAD")]
    target = CACHE / commit
    if (target / "done").exists():
        return target
    clone = CACHE / ("clone-" + commit)
    if not clone.exists():
        _git("clone", "--quiet", "--no-checkout", str(BUNDLE), str(clone), cwd=REPO)
    names = _git("ls-tree", "--name-only", "HEAD", "grammars/", cwd=clone).decode().split()
    for name in list(FILES) + [n for n in names if n.endswith(".gbnf")]:
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(subprocess.run(["git", "show", "HEAD:" + name], cwd=str(clone), check=True,
                                       capture_output=True).stdout)
    (target / "done").write_text("")
    return target


# -- a lexer for the C++ literals the tests use ---------------------------------------------------------

LEXEME = re.compile(r'''
    (?P<space>\s+|//[^\n]*|/\*.*?\*/)
  | R"(?P<delim>[^(]*)\((?P<raw>.*?)\)(?P=delim)"
  | "(?P<str>(?:[^"\\]|\\.)*)"
  | '(?P<chr>(?:[^'\\]|\\.)+)'
  | token\((?P<tok>\d+)\)
  | (?P<num>\d+)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<punct>[{},+()])
  | (?P<other>.)
''', re.S | re.X)
C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def c_string(body: str) -> str:
    """A C string literal's text (source is UTF-8; escapes \\n \\t \\r \\\\ \\" \\0)."""
    return re.sub(r"\\(.)", lambda m: C_ESCAPES[m.group(1)], body)


def lex(source: str) -> List[Any]:
    items: List[Any] = []
    pos = 0
    while pos < len(source):
        m = LEXEME.match(source, pos)
        if m is None:
            raise ValueError("cannot read C++ at %r" % source[pos:pos + 40])
        pos = m.end()
        if m.group("space") is not None:
            continue
        if m.group("raw") is not None:
            items.append(("str", [m.group("raw")]))
        elif m.group("str") is not None:
            items.append(("str", [c_string(m.group("str"))]))
        elif m.group("chr") is not None:
            items.append(("num", ord(c_string(m.group("chr")))))
        elif m.group("tok") is not None:
            items.append(("str", [Token(int(m.group("tok")))]))
        elif m.group("num") is not None:
            items.append(("num", int(m.group("num"))))
        elif m.group("name") is not None:
            items.append(("name", m.group("name")))
        elif m.group("punct") is not None:
            items.append(("punct", m.group("punct")))
        else:
            items.append(("other", m.group("other")))
    return items


def read_value(items: List[Any], i: int):
    """One argument: a string (pieces joined by +), a number, a name, or a {list}; returns (value, next i)."""
    kind, value = items[i]
    if kind == "punct" and value == "{":
        values, i = [], i + 1
        while items[i] != ("punct", "}"):
            v, i = read_value(items, i)
            values.append(v)
            if items[i] == ("punct", ","):
                i += 1
        return values, i + 1
    if kind == "str":
        pieces = list(value)
        while items[i + 1] == ("punct", "+"):
            pieces.extend(items[i + 2][1])
            i += 2
        return pieces, i + 1
    return value, i + 1


def calls(source: str, function: str) -> List[List[Any]]:
    """The arguments of every call `function(...)` written in `source` (give it code, not definitions)."""
    items = lex(source)
    found = []
    for i, item in enumerate(items):
        if item == ("name", function) and items[i + 1] == ("punct", "("):
            args, j = [], i + 2
            while items[j] != ("punct", ")"):
                value, j = read_value(items, j)
                args.append(value)
                if items[j] == ("punct", ","):
                    j += 1
            found.append(args)
    return found


def text(pieces: List[Any]) -> str:
    assert all(isinstance(p, str) for p in pieces), pieces
    return "".join(pieces)


def parser_cases() -> Dict[str, List[Any]]:
    """{"failures": [grammar...], "parsings": [(grammar, {name: id}, [(type, value)...])...]}."""
    source = (source_dir() / FILES[0]).read_text(encoding="utf-8")
    main = source[source.index("int main"):]  # after the helpers' definitions
    parsings = [(text(g), {text(n): v for n, v in symbols}, [(t, v) for t, v in elements])
                for g, symbols, elements in calls(main, "verify_parsing")]
    return {"failures": [text(g) for g, in calls(main, "verify_failure")], "parsings": parsings}


def integration_cases() -> List[Dict[str, Any]]:
    """[{"kind": "grammar"|"schema", "name", "source", "passing": [[pieces]], "failing": [[pieces]]}]."""
    source = (source_dir() / FILES[1]).read_text(encoding="utf-8")
    body = source[source.index("static void test_simple_grammar"):]
    body = re.sub(r"^static void (\w+)\(\) \{", "", body, flags=re.M)  # the cases live inside these functions
    cases = []
    for kind in ("grammar", "schema"):
        for desc, src, passing, failing in calls(body, "test_" + kind):
            cases.append({"kind": kind, "name": text(desc), "source": text(src), "passing": passing,
                          "failing": failing})
    return cases


def schema_converter_cases() -> List[Dict[str, Any]]:
    """[{"name", "succeeds": bool, "schema": text, "grammar": llama.cpp's GBNF for it}] of the converter test."""
    source = (source_dir() / FILES[2]).read_text(encoding="utf-8")
    body = source[source.index("auto test = [&]"):source.index("int main")]
    body = body[body.index("};") + 2:]  # after the lambda that runs each case
    return [{"name": text(name), "succeeds": status == "SUCCESS", "schema": text(schema), "grammar": text(grammar)}
            for (status, name, schema, grammar), in calls(body, "test")]
