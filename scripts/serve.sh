#!/usr/bin/env bash
# Sets everything up, builds the site with the default model into dist/site/ and serves it on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 build/build_site.py
exec python3 build/serve.py "$@"
