"""`python -m pychat_wasm.cli`: the same as the `pychat-wasm` command."""
import sys

from .main import main

sys.exit(main())
