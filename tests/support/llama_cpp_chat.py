"""llama.cpp's chat templates and its tool-call parsing cases, read from the git bundle npm `node-llama-cpp` ships
(as llama_cpp_vocabs.py reads its vocabularies): `models/templates/*.jinja` and `tests/test-chat.cpp` are taken
out once into .cache/ (gitignored), keyed by the bundle's commit.

The cases are llama.cpp's own, read from its C++ test source:
    auto tst = peg_tester("models/templates/X.jinja", ...);      (or a `for (... path : { "...", ... })` loop)
    tst.test("model output").tools({ special_function_tool }).expect(message_assist_call).run();
with the expected messages from `const common_chat_msg NAME = simple_assist_msg(content, reasoning, name,
arguments, id)`. Only plain cases are taken: a test whose chain sets nothing but tools, expect and
expect_reconstruction (no thinking, continuation or JSON schema).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, NamedTuple

from llama_cpp_vocabs import CACHE, bundle_files

CHAT_CACHE = CACHE.parent / "llama.cpp-chat"
STRING = r'"(?:[^"\\\n]|\\.)*"'


class ParseCase(NamedTuple):
    template: str  # the template's file name without .jinja
    output: str  # what the model wrote
    with_tools: bool
    content: str  # what llama.cpp reads: the content, and the calls as (name, arguments JSON text, id)
    calls: List[tuple]


def chat_dir() -> Path:
    """The directory holding templates/ and test-chat.cpp."""
    return bundle_files(CHAT_CACHE, ["models/templates", "tests/test-chat.cpp"],
                        lambda path: ("templates/" if path.endswith(".jinja") else "") + Path(path).name)


def template_source(name: str) -> str:
    """llama.cpp's copy of a model's chat template, e.g. "Qwen-Qwen2.5-7B-Instruct"."""
    return (chat_dir() / "templates" / (name + ".jinja")).read_text(encoding="utf-8")


def _strings(code: str) -> List[str]:
    return [ast.literal_eval(s) for s in re.findall(STRING, code)]


def expected_messages(source: str) -> Dict[str, tuple]:
    """NAME -> (content, [(name, arguments, id)]) of test-chat.cpp's simple_assist_msg constants."""
    found = {}
    for name, args in re.findall(r"const common_chat_msg (\w+)\s*=\s*simple_assist_msg\(((?:%s|[^;\"])*)\);"
                                 % STRING, source):
        values = _strings(re.sub(r"/\*.*?\*/", "", args)) + ["", "", "", "", ""]
        content, _reasoning, tool, arguments, ident = values[:5]
        found[name] = (content, [(tool, arguments or "{}", ident)] if tool else [])
    return found


def parse_cases(templates: List[str]) -> List[ParseCase]:
    """llama.cpp's plain parsing cases for these templates (names without .jinja)."""
    source = (chat_dir() / "test-chat.cpp").read_text(encoding="utf-8")
    expected = expected_messages(source)
    cases = []
    parts = source.split("peg_tester(")
    for before, part in zip(parts, parts[1:]):
        argument = re.match(r"\s*(%s|\w+)" % STRING, part).group(1)
        if argument.startswith('"'):
            paths = [ast.literal_eval(argument)]
        else:  # a loop over templates just before: for (const auto & path : { "...", ... })
            loop = re.findall(r"for \(const auto & %s\s*:\s*\{([^}]*)\}" % re.escape(argument), before)
            paths = _strings(loop[-1]) if loop else []
        names = [Path(p).stem for p in paths if Path(p).stem in templates]
        if not names:
            continue
        for test in re.finditer(r"tst\.test\(\s*((?:%s\s*)+)\)(.*?)\.run\(\);" % STRING, part, re.S):
            chain = test.group(2)
            calls = re.findall(r"\.(\w+)\(", chain)
            expect = re.findall(r"\.expect\((\w+)\)", chain)
            plain = not set(calls) - {"tools", "expect", "expect_reconstruction"}
            if not plain or len(expect) != 1 or expect[0] not in expected:
                continue
            content, tool_calls = expected[expect[0]]
            output = "".join(_strings(test.group(1)))
            for name in names:
                cases.append(ParseCase(name, output, "tools" in calls, content, tool_calls))
    return cases

