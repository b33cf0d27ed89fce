#!/usr/bin/env bash
# Sets everything up, then runs every test: unit, oracle (slow), in-Pyodide and browser end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m pytest "$@"
