"""What every CLI subcommand shares: finding the default model, the LoRA options, and failing cleanly."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from ..errors import PychatError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ENV = "PYCHAT_WASM_MODEL"


class CLIError(PychatError):
    """A user mistake on the command line (missing file, bad argument)."""


def default_model_path() -> Path:
    """$PYCHAT_WASM_MODEL, else the SmolLM2 model that scripts/setup.sh puts in models/."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    candidates = [Path.cwd() / "models" / DEFAULT_MODEL_NAME,
                  Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL_NAME]
    for path in candidates:
        if path.exists():
            return path
    raise CLIError("no model given and the default model is not installed (looked for %s): run scripts/setup.sh, "
                   "set %s, or pass a .gguf path" % (candidates[-1], MODEL_ENV))


def model_path(arg: Optional[str]) -> Path:
    """The model named on the command line, checked to exist, or the default one."""
    if not arg:
        return default_model_path()
    path = Path(arg)
    if not path.exists():
        raise CLIError("model file not found: %s" % path)
    if path.is_dir():
        raise CLIError("%s is a directory, not a .gguf file" % path)
    return path


def fail(message: str) -> int:
    """Print an error for a person (no traceback) and return the exit code 1."""
    print("error: %s" % message, file=sys.stderr)
    return 1


class LoraOption(argparse.Action):
    """--lora PATH adds (PATH, 1.0) to args.lora; --lora-scale S sets the scale of the --lora before it."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, "lora", **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        adapters = list(namespace.lora)
        if option_string == "--lora":
            adapters.append((value, 1.0))
        elif not adapters:
            parser.error("--lora-scale sets the scale of the --lora before it: give --lora ADAPTER.gguf first")
        else:
            adapters[-1] = (adapters[-1][0], value)
        namespace.lora = adapters


def add_lora_options(p: argparse.ArgumentParser) -> None:
    """--lora ADAPTER.gguf [--lora-scale S], repeatable: args.lora = [(path, scale), ...] (chat and serve)."""
    p.add_argument("--lora", action=LoraOption, metavar="ADAPTER.gguf",
                   help="apply this LoRA adapter (llama.cpp's GGUF format) to the model at load, without writing "
                        "a merged copy; repeatable")
    p.add_argument("--lora-scale", action=LoraOption, type=float, metavar="S",
                   help="the scale of the --lora before it (default 1)")
    p.set_defaults(lora=[])


def add_speculative_option(p: argparse.ArgumentParser) -> None:
    """--speculative / --no-speculative: args.speculative (chat and serve; the library's LLM(speculative=))."""
    p.add_argument("--speculative", action=argparse.BooleanOptionalAction, default=True,
                   help="draft tokens from the prompt (prompt lookup) and check them in one pass; the answer is "
                        "the same either way, faster when it copies from the prompt (default: on; "
                        "--no-speculative turns it off)")
