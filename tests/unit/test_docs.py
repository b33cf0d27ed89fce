"""The docs against the tree: every link and every repository path README.md and docs/*.md mention exists,
every link into a page lands on one of its headings, the README stays a front door (at most 250 lines), and the
import rules docs/ARCHITECTURE.md states hold in pychat_wasm/.

A path is any word (in prose, `code` or a fenced block) that starts with one of the repository's top-level
folders and names a file or a folder: `pychat_wasm/model/forward.py`, `tests/browser/`, `bench/bench_*.py` (a
glob must match at least one file). A trailing `:123` line number is ignored, and so is a pattern with a
`<placeholder>`.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 250

ROOTS = ("pychat_wasm", "tests", "web", "build", "bench", "fuzz", "scripts", "docs", "examples", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*)" % "|".join(re.escape(root) for root in ROOTS))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
ANCHOR = re.compile(r'<a id="([\w-]+)"></a>')


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.

    >>> slug("Where to change X: `config.py`, the load plan")
    'where-to-change-x-configpy-the-load-plan'
    """
    text = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    text = page.read_text(encoding="utf-8")
    return {slug(h) for h in HEADING.findall(_without_fences(text))} | set(ANCHOR.findall(text))


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def mentioned_paths(text: str) -> set:
    found = set()
    for match in PATH.finditer(text):
        if text[match.end():match.end() + 1] == "<":
            continue  # a pattern such as tests/unit/test_<module>.py, not a path
        path = re.sub(r":\d+$", "", match.group(1)).rstrip(".")
        found.add(path)
    return found


def _exists(path: str) -> bool:
    if "*" in path:
        return any(REPO.glob(path))
    return (REPO / path).exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_mentioned_path_exists(page):
    missing = sorted(p for p in mentioned_paths(page.read_text(encoding="utf-8")) if not _exists(p))
    assert not missing, "%s names paths that do not exist: %s" % (page.name, missing)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_lands(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, fragment = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(target)
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(target)
    assert not broken, "%s has links that go nowhere: %s" % (page.name, broken)


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, "README.md has %d lines; keep it at most %d and move the rest to docs/" % (
        len(lines), README_MAX_LINES)


def test_docs_stay_inside_the_project():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "/work/" not in text and "](/" not in text, "%s points outside the repository" % page.name


def test_the_checker_sees_paths_and_links():
    """The checks above would catch a wrong path, a glob that matches nothing and a dead anchor."""
    assert mentioned_paths("see `pychat_wasm/model/forwrd.py:12`, then bench/bench_*.py.") == {
        "pychat_wasm/model/forwrd.py", "bench/bench_*.py"}
    assert not _exists("pychat_wasm/model/forwrd.py") and _exists("bench/bench_*.py")
    assert not _exists("fuzz/nothing_*.py")
    assert mentioned_paths("llama.cpp/tests/test-tokenizer-0.cpp") == set()  # another project's path
    assert mentioned_paths("tests/unit/test_<module>.py") == set()
    assert "the-two-commands" in anchors(REPO / "README.md")


# The import rules of docs/ARCHITECTURE.md: (wing, wings it never imports).
NEVER = {
    "gguf": {"tokenizers", "model", "chat", "grammar", "train", "api", "server", "browser", "cli"},
    "tokenizers": {"model", "chat", "grammar", "train", "api", "server", "browser", "cli"},
    "model": {"chat", "grammar", "train", "api", "server", "browser", "cli"},
    "grammar": {"model", "chat", "train", "api", "server", "browser", "cli"},
    "chat": {"train", "api", "server", "browser", "cli"},
    "train": {"api", "server", "browser", "cli"},
    "api": {"server", "browser", "cli"},
    "server": {"browser", "cli"},
    "browser": {"server", "cli"},
    "cli": {"browser"},
}


def wing_imports(wing: str) -> dict:
    """{module path: the other wings it imports} for every module of pychat_wasm/<wing>/."""
    found = {}
    for module in sorted((REPO / "pychat_wasm" / wing).rglob("*.py")):
        package = ["pychat_wasm"] + list(module.relative_to(REPO / "pychat_wasm").parent.parts)
        wings = set()
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    target = package[: len(package) - node.level + 1] + (node.module or "").split(".")
                else:
                    target = (node.module or "").split(".")
            elif isinstance(node, ast.Import):
                target = [name for alias in node.names for name in alias.name.split(".")[:2]]
            else:
                continue
            if target[0] == "pychat_wasm" and len(target) > 1 and target[1]:
                wings.add(target[1])
        found[module.relative_to(REPO).as_posix()] = wings - {wing}
    return found


@pytest.mark.parametrize("wing", sorted(NEVER))
def test_import_rules_hold(wing):
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert "`%s` never imports" % wing in text, "docs/ARCHITECTURE.md no longer states %s's rule" % wing
    broken = {module: sorted(wings & NEVER[wing]) for module, wings in wing_imports(wing).items()
              if wings & NEVER[wing]}
    assert not broken, "imports that docs/ARCHITECTURE.md forbids: %s" % broken
