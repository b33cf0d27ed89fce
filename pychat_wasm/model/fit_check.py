"""Fit check: will a model fit the worker's memory, under each weight policy, before its weights are fetched?

Everything comes from the GGUF header (GGUFFile.header on the first megabytes of a Range request, or a
whole file): tensor shapes and types size the weights, the hyperparameters size the KV cache. Per policy:

    file bytes       the GGUF itself; the browser holds all of it in the wasm heap (natively it is mmapped)
    weight bytes     what the model reads its weights from: float32/int8 copies of the matrices, or views
                     of the file (quantized), the token embedding (always a view) and float32 norm vectors
    allocated        bytes the load allocates beyond the file: the copies and vectors, then the KV cache
    KV cache         2 (keys, values) x 4 bytes x layers x kv heads x context x head_dim
    total            file + allocated weights + KV cache, against the memory limit (in the browser the
                     4 GiB heap less RUNTIME_RESERVE for Python itself)

and one verdict: "fits", "fits with a shorter context" (the largest context that fits, at least
MIN_CONTEXT tokens) or "does not fit" (needs X, has Y). No single array may reach 2 GiB either (wasm).
The same figures, for one worker's part of a split model, choose the policy a load uses (load_plan.py):
the fastest that "fits" (`fastest_fitting`).

    >>> report = fit_check(GGUFFile.header(first_bytes, file_size), context_length=2048)  # doctest: +SKIP
    >>> report["policies"]["int8"]["verdict"]                                              # doctest: +SKIP
    'fits'
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..gguf.reader import GGUFFile
from .kv_cache import KVCache
from .config import ModelConfig
from .weights import matrices_to_store, output_head_name, stored_matrix_infos
from .matrices import POLICIES, estimate_bytes
from .tensor_parallel import ColumnShard, ShardPlan, head_blocks

HEAP_LIMIT = 4 * 2 ** 30  # Pyodide 0.27's wasm heap: the one heap figure of chat (less RUNTIME_RESERVE) and training
# What Python keeps of the heap for itself: 36 MB after boot (Pyodide, numpy, the engine); loading SmolLM2 left the
# heap 118 MB above the model's own bytes (transient buffers, fragmentation). The rest is the model's.
RUNTIME_RESERVE = 256 * 2 ** 20
MODEL_HEAP = HEAP_LIMIT - RUNTIME_RESERVE
MAX_ARRAY_BYTES = 2 ** 31  # any one array must stay under 2 GiB in wasm
MIN_CONTEXT = 256  # a shorter context than this is no chat: the model does not fit
FITS, FITS_SHORTER, DOES_NOT_FIT = "fits", "fits with a shorter context", "does not fit"


def _allocated_matrix_bytes(matrices: list, policy: str) -> int:
    """Bytes the load allocates for the stored matrices: every copy under float32 or int8; under "quantized"
    only a worker's column shards, copied out of the file (as int8 where they split a quantization block)."""
    if policy != "quantized":
        return estimate_bytes(matrices, policy)
    return sum(estimate_bytes([m], "quantized" if m.whole_blocks() else "int8")
               for m in matrices if isinstance(m, ColumnShard))


def _weights(gguf: GGUFFile, policy: str, matrices: list) -> Dict[str, int]:
    """Bytes the model reads weights from, and the part of them the load allocates (the rest is the file)."""
    vectors = 4 * sum(info.n_elements for info in gguf.tensors.values() if len(info.shape) == 1)  # float32 copies
    matrix_bytes = estimate_bytes(matrices, policy)
    embedding = gguf.tensors["token_embd.weight"]
    tied = output_head_name(gguf) == "token_embd.weight"
    shared = policy == "quantized" and tied  # the output head is (a view of) the embedding itself
    largest = max([estimate_bytes([m], policy) for m in matrices] or [0])
    return {"weight_bytes": matrix_bytes + vectors + (0 if shared else embedding.nbytes),
            "allocated_weight_bytes": vectors + _allocated_matrix_bytes(matrices, policy),
            "largest_array_bytes": max(gguf.size, largest)}


def _verdict(fixed: int, kv_per_token: int, context: int, largest: int, limit: int) -> Dict[str, Any]:
    needs = fixed + kv_per_token * context
    if largest >= MAX_ARRAY_BYTES:
        return {"verdict": DOES_NOT_FIT, "context_length": 0,
                "message": "does not fit: one array needs %s, wasm allows under %s" % (_size(largest),
                                                                                       _size(MAX_ARRAY_BYTES))}
    if needs <= limit:
        return {"verdict": FITS, "context_length": context, "message": FITS}
    shorter = (limit - fixed) // kv_per_token if limit > fixed else 0
    if shorter >= MIN_CONTEXT:
        return {"verdict": FITS_SHORTER, "context_length": int(shorter),
                "message": "fits with a shorter context (%d tokens)" % shorter}
    return {"verdict": DOES_NOT_FIT, "context_length": 0,
            "message": "does not fit: needs %s, has %s" % (_size(needs), _size(limit))}


def policy_rows(gguf: GGUFFile, config: ModelConfig, memory_limit: int,
                shard: Optional[ShardPlan] = None) -> Dict[str, Dict[str, Any]]:
    """The figures and verdict of every policy for a load of `config` (with `shard`: one worker's part)."""
    if shard is None:
        matrices, kv_heads = stored_matrix_infos(gguf), config.n_kv_heads
    else:
        matrices = matrices_to_store(gguf, config, shard)
        kv_heads = sum(b.n_kv for b in head_blocks(shard, config.n_heads, config.n_kv_heads))
    kv_per_token = KVCache.bytes_needed(config.n_layers, kv_heads, 1, config.head_dim)
    rows = {}
    for policy in POLICIES:
        weights = _weights(gguf, policy, matrices)
        fixed = gguf.size + weights["allocated_weight_bytes"]
        row = dict(weights, file_bytes=gguf.size, kv_cache_bytes=kv_per_token * config.context_length,
                   total_bytes=fixed + kv_per_token * config.context_length)
        row.update(_verdict(fixed, kv_per_token, config.context_length, weights["largest_array_bytes"], memory_limit))
        rows[policy] = row
    return rows


def fastest_fitting(rows: Dict[str, Dict[str, Any]]) -> Optional[str]:
    """The fastest policy whose verdict is "fits" at the context asked for, or None."""
    return next((p for p in POLICIES if rows[p]["verdict"] == FITS), None)


def fit_check(gguf: GGUFFile, context_length: Optional[int] = None, memory_limit: int = MODEL_HEAP) -> Dict[str, Any]:
    """The figures and verdict of every policy at `context_length` (default: the engine's default context),
    and the fastest policy that fits ("best": the one a load at that context uses; else the one that fits the
    longest shorter context; None if none fits at any context)."""
    config = ModelConfig.from_gguf(gguf, context_length)  # InvalidSettingError for a context out of range
    policies = policy_rows(gguf, config, memory_limit)
    shorter = sorted((p for p in POLICIES if policies[p]["verdict"] == FITS_SHORTER),
                     key=lambda p: -policies[p]["context_length"])
    return {"context_length": config.context_length, "trained_context_length": config.trained_context_length,
            "kv_bytes_per_token": KVCache.bytes_needed(config.n_layers, config.n_kv_heads, 1, config.head_dim),
            "memory_limit": int(memory_limit), "policies": policies,
            "best": fastest_fitting(policies) or (shorter or [None])[0]}


def _size(n: int) -> str:
    return "%.1f MB" % (n / 1e6) if n < 1e9 else "%.2f GB" % (n / 1e9)


def format_fit_table(report: Dict[str, Any]) -> List[str]:
    """The report as the lines `pychat-wasm info` prints."""
    lines = ["fit check at %d tokens of context (trained for %d), memory limit %s:"
             % (report["context_length"], report["trained_context_length"], _size(report["memory_limit"])),
             "  %-9s  %10s  %10s  %10s  %10s  %s" % ("policy", "weights", "allocated", "KV cache", "total", "verdict")]
    for policy, row in report["policies"].items():
        lines.append("  %-9s  %10s  %10s  %10s  %10s  %s" % (
            policy, _size(row["weight_bytes"]), _size(row["allocated_weight_bytes"]), _size(row["kv_cache_bytes"]),
            _size(row["total_bytes"]), row["message"]))
    lines.append("  (total = the %s file + allocated weights + KV cache; best policy: %s)"
                 % (_size(next(iter(report["policies"].values()))["file_bytes"]), report["best"] or "none"))
    return lines
