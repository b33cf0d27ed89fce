"""llama.cpp's tokenizer test suite: its `models/ggml-vocab-*.gguf` files with their `.inp`/`.out` cases.

npm `node-llama-cpp` (package.json, installed by scripts/setup.sh) ships the llama.cpp sources it builds
from as a git bundle. The vocabularies are taken out of it once, into .cache/ (gitignored), keyed by the
bundle's commit. The cases are read as llama.cpp's tests/test-tokenizer-0.cpp reads them:
- `.inp` holds the texts separated by "\\n__ggml_vocab_test__\\n" (a separator at the very end does not
  start another text); `.out` has one line per text, the expected ids separated by spaces;
- the cases are a map from text to ids, so a text given twice keeps its last ids;
- each text is tokenized with add_special and parse_special off.
"""
from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]

BUNDLE = REPO / "node_modules" / "node-llama-cpp" / "llama" / "gitRelease.bundle"
CACHE = REPO / ".cache" / "llama.cpp-vocabs"
SEPARATOR = "\n__ggml_vocab_test__\n"

KINDS = {  # the suite's vocabularies by the kind of tokenizer their model is
    "bpe": ["command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4", "gpt-2", "llama-bpe", "mpt", "qwen2",
            "qwen35", "refact", "starcoder"],
    "spm": ["llama-spm", "phi-3"],
    "wpm": ["bert-bge"],
}
KIND_OF = {name: kind for kind, names in KINDS.items() for name in names}


class MissingSuite(Exception):
    pass


def _git(*args: str, cwd: Path) -> bytes:
    return subprocess.run(["git", *args], cwd=str(cwd), check=True, capture_output=True).stdout


def bundle_files(cache: Path, pathspecs: Sequence[str], place: Callable[[str], Optional[str]]) -> Path:
    """cache/<the bundle's commit>/, holding the files of `pathspecs` (paths in llama.cpp's tree) of the
    bundle's HEAD, each at place(its path in the tree) (None: left out); taken out on first use."""
    if not BUNDLE.exists():
        raise MissingSuite("%s is missing: run scripts/setup.sh (npm installs node-llama-cpp)" % BUNDLE)
    (commit, _), = [line.split() for line in _git("bundle", "list-heads", str(BUNDLE), cwd=REPO).decode().splitlines()
                    if line.endswith(" HEAD")]
    target = cache / commit
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=str(cache)) as scratch:
        clone = Path(scratch) / "llama.cpp"
        _git("clone", "--quiet", "--no-checkout", str(BUNDLE), str(clone), cwd=REPO)
        archive = Path(scratch) / "files.tar"
        archive.write_bytes(_git("archive", "HEAD", *pathspecs, cwd=clone))
        out = Path(scratch) / "out"
        out.mkdir()
        with tarfile.open(str(archive)) as tar:
            for member in tar.getmembers():
                where = place(member.name) if member.isfile() else None
                if where is not None:
                    (out / where).parent.mkdir(parents=True, exist_ok=True)
                    (out / where).write_bytes(tar.extractfile(member).read())
        try:
            out.rename(target)  # atomic: a concurrent run either sees all files or none
        except OSError:
            if not target.exists():
                raise
    return target


def vocab_dir() -> Path:
    """The directory holding the suite's ggml-vocab-* files."""
    return bundle_files(CACHE, ["models"], lambda path: Path(path).name if Path(path).name.startswith("ggml-vocab-")
                        else None)


def suite_vocabs() -> List[str]:
    """Names of the vocabularies that have cases, e.g. "llama-spm" for ggml-vocab-llama-spm.gguf."""
    return sorted(p.name[len("ggml-vocab-"):-len(".gguf.inp")] for p in vocab_dir().glob("ggml-vocab-*.gguf.inp"))


def vocab_path(name: str) -> Path:
    return vocab_dir() / ("ggml-vocab-%s.gguf" % name)


def read_cases(name: str) -> Dict[str, List[int]]:
    """text -> expected ids, as test-tokenizer-0.cpp's read_tests builds them."""
    path = vocab_path(name)
    raw = Path(str(path) + ".inp").read_bytes().decode("utf-8")
    texts: List[str] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(SEPARATOR, pos)
        if end < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:end])
        pos = end + len(SEPARATOR)
    lines = Path(str(path) + ".out").read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # std::getline yields no line after a final newline
    if len(lines) != len(texts):
        raise ValueError("%s: %d texts but %d lines of ids" % (path.name, len(texts), len(lines)))
    return {text: [int(t) for t in line.split()] for text, line in zip(texts, lines)}

