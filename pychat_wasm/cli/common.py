"""What every CLI subcommand shares: finding the default model and failing cleanly."""
from __future__ import annotations

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
