#!/usr/bin/env bash
# The long fuzz run: 1,000,000 cases over 2 processes (about 45 cases/s on a busy 2-core machine).
# Progress and findings go to fuzz-out/ (summary.json after every chunk, a reproducer per finding kind).
# Go on where a stopped run ended: START=618000 CASES=382000 bash fuzz/long_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m fuzz.fuzz_gguf --cases "${CASES:-1000000}" --seed "${SEED:-0}" --start "${START:-0}" \
    --processes "${PROCESSES:-2}" \
    --deadline 1.0 --out "${OUT:-fuzz-out}" "$@"
