#!/usr/bin/env bash
# Installs everything pychat-wasm needs on a fresh machine, and nothing by hand:
# Debian Chromium (browser tests), the Python package with its test tools, the npm packages
# (Pyodide 0.27.7, llama.cpp and wllama for the benchmarks), the Python packages the browser loads beside
# Pyodide (numpy 2.0.2, Jinja2, MarkupSafe: build/browser_packages.py) and the two test models.
# Safe to run again: every step skips work that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Debian chromium"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

echo "== installing Python packages"
# torch first and pinned: 2.13.0 is a CPU wheel on local disk; an unpinned torch pulls GBs of CUDA.
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'

echo "== installing npm packages"
if [ ! -f node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --omit=optional --no-audit --no-fund --loglevel=error
fi

echo "== fetching the browser's Python packages"
python3 build/browser_packages.py

echo "== installing models"
python3 scripts/fetch_models.py
