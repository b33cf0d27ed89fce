"""Dequantization speed per type, in M weights/s, next to gguf-py's as an in-process reference.

    python bench/bench_dequant.py [--weights N]      # default 4M weights per type

Blocks are random bytes with finite fp16 scales; speed does not depend on the values. Prints only.
gguf returns F32 as a zero-copy view, so its F32 column is not a decoding speed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pychat_wasm.gguf import quants  # noqa: E402
from pychat_wasm.gguf.ggml_types import TYPES_BY_NAME  # noqa: E402

import gguf  # noqa: E402  (the reference: gguf-py, installed by scripts/setup.sh)
import gguf.quants  # noqa: E402


def random_tensor(name: str, n_weights: int, rng: np.random.RandomState) -> np.ndarray:
    """Random bytes for n_weights weights of type `name`, [rows, row_bytes], with no fp16 NaN/inf."""
    t = TYPES_BY_NAME[name]
    raw = rng.randint(0, 256, size=n_weights // t.block_size * t.type_size).astype(np.uint8)
    blocks = raw.view(quants.FORMATS[t.id].block)
    for field in (blocks.dtype.names or ()):
        if blocks.dtype[field] == np.dtype("<f2"):
            bits = blocks[field].view("<u2")
            bits[(bits & 0x7C00) == 0x7C00] ^= 0x4000  # exponent all ones -> finite
    return raw.reshape(-1, 256 // t.block_size * t.type_size)  # rows of 256 weights


def best_seconds(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=int, default=1 << 22, help="weights per type (default 4M)")
    n_weights = parser.parse_args().weights
    rng = np.random.RandomState(0)
    print("%-5s %12s %12s %7s" % ("type", "ours Mw/s", "gguf Mw/s", "ratio"))
    for name in quants.SUPPORTED_TYPES:
        t = TYPES_BY_NAME[name]
        raw = random_tensor(name, n_weights, rng)
        ours = n_weights / best_seconds(lambda: quants.dequantize(raw, t.id, (raw.shape[0], 256))) / 1e6
        qtype = gguf.GGMLQuantizationType[name]
        ref = n_weights / best_seconds(lambda: gguf.quants.dequantize(raw, qtype)) / 1e6
        print("%-5s %12.0f %12.0f %6.1fx" % (name, ours, ref, ours / ref))


if __name__ == "__main__":
    main()
