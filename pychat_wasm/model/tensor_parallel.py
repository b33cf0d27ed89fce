"""Tensor parallelism: one model split across several workers, each holding only its shard of the weights.

In the browser one numpy worker runs a token at the no-SIMD ceiling of one core; N workers (web/worker_pool.js)
each compute 1/N of every layer. The split, balanced phase by phase because each phase ends where the workers
wait for one another:

    attention   by whole query heads (9 heads over 2 workers: 4 and 5); with GQA a KV head whose query heads
                land on two workers is computed by both. A worker's q, k, v rows and its columns of wo.
                Workers beyond the heads (Gemma 3's 4 over 8 workers) hold none and add zeros.
    FFN         by hidden units: rows of gate and up, columns of down, in whole quantization blocks where
                they share out evenly, else in units of 32.
    output      by vocabulary rows.

`phase_work` gives each worker's multiply-adds per phase; the heaviest worker of each phase sets everyone's
pace (docs/browser.md, "Several workers per token", has the scaling model built on it).

Each worker's wo and down products are partial sums of the full product: `collective.sum_` adds them
across workers (in rank order in every worker, so all hold bit-identical activations); the output head's
slices are put together with `collective.gather`. Everything else (norms, RoPE, residuals, the sampler)
every worker computes in full, on identical numbers, so all of them pick the same next token.

    >>> plans = plan_shards(config, workers=2)          # one ShardPlan per worker  # doctest: +SKIP
    >>> model = Model.from_gguf(gguf, workers=2, rank=rank, collective=collective)  # its plans[rank]  # doctest: +SKIP

A Collective (see `Collective` below) is web/tensor_parallel.js over a SharedArrayBuffer in the browser,
and threads in tests/oracle/test_tensor_parallel.py.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import InvalidSettingError
from ..gguf.ggml_types import TYPES_BY_ID
from .config import TENSORS
from .matrices import Float32Matrix, Int8Matrix, Matrix, QuantizedMatrix, store_matrix

Span = Tuple[int, int]  # [start, stop)


class ShardPlan(NamedTuple):
    rank: int
    workers: int
    heads: Span  # query heads
    kv_heads: Span  # KV heads those query heads read (GQA: may overlap the neighbours')
    ffn: Span  # FFN hidden units
    vocab: Span  # rows of the output head


class Collective:
    """What a sharded model needs from its workers; every worker makes the same calls in the same order.

    sum_(x)                  x (float32, C-contiguous) becomes the sum of every worker's x, in rank order
    gather(part, out, start) out (float32 [total]) receives every worker's part; this worker's is part,
                             which belongs at out[start:start + len(part)]
    """

    rank, workers = 0, 1

    def sum_(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def gather(self, part: np.ndarray, out: np.ndarray, start: int) -> None:
        raise NotImplementedError


def _even_spans(total: int, parts: int, unit: int = 1) -> List[Span]:
    """`total` split into `parts` consecutive spans made of whole `unit`s, as even as they can be.

    >>> _even_spans(9, 2)
    [(0, 4), (4, 9)]
    >>> _even_spans(1536, 2, unit=256)
    [(0, 768), (768, 1536)]
    """
    units = total // unit
    bounds = [unit * (units * i // parts) for i in range(parts)] + [total]
    return list(zip(bounds[:-1], bounds[1:]))


def ffn_block(gguf_file) -> int:
    """The quantization block of the FFN down matrix: its columns split in whole blocks."""
    return TYPES_BY_ID[gguf_file.tensors["blk.0.ffn_down.weight"].type_id].block_size


FFN_UNIT = 32  # the finest FFN split: int8's block (matrices.py), which holds a shard that cuts a larger block


def _finest_ffn_unit(ffn_dim: int, block: int) -> int:
    """FFN_UNIT, or whole blocks of the down matrix for a size FFN_UNIT does not divide, else the whole FFN."""
    return FFN_UNIT if ffn_dim % FFN_UNIT == 0 else (block if ffn_dim % block == 0 else ffn_dim)


def _ffn_unit(ffn_dim: int, workers: int, block: int) -> int:
    """FFN units go to workers in whole blocks of the down matrix when those share out evenly (the quantized
    policy then keeps the file's bytes), else in the finest unit (a shard that cuts a block is held as int8
    under that policy; float32 and int8 are unaffected).

    >>> _ffn_unit(2048, 4, 256), _ffn_unit(2048, 3, 256), _ffn_unit(1536, 5, 32)
    (256, 32, 32)
    """
    if ffn_dim % block == 0 and (ffn_dim // block) % workers == 0:
        return block
    return _finest_ffn_unit(ffn_dim, block)


def max_workers(config, block: int = 32) -> int:
    """How many workers this model's shapes split into: every worker needs a unit of FFN (`block`: the
    quantization block of the FFN down matrix, whose columns are split). Workers beyond the query heads hold
    none: they add zeros to the attention's sum and take their full share of the FFN and the head."""
    return config.ffn_dim // _finest_ffn_unit(config.ffn_dim, block)


def plan_shards(config, workers: int, block: int = 32) -> List[ShardPlan]:
    """One ShardPlan per worker (`workers` of them, at most max_workers(config, block)). Query heads and
    vocabulary rows are shared out as evenly as whole ones can be, FFN units in whole `_ffn_unit`s."""
    if not 1 <= workers <= max_workers(config, block):
        raise InvalidSettingError("this model splits into 1 to %d workers, not %d"
                                  % (max_workers(config, block), workers))
    group = config.n_heads // config.n_kv_heads  # query heads per KV head
    heads, vocab = _even_spans(config.n_heads, workers), _even_spans(config.vocab_size, workers)
    ffn = _even_spans(config.ffn_dim, workers, _ffn_unit(config.ffn_dim, workers, block))
    return [ShardPlan(rank, workers, heads[rank], _kv_span(heads[rank], group), ffn[rank], vocab[rank])
            for rank in range(workers)]


def _kv_span(heads: Span, group: int) -> Span:
    """The KV heads that query heads [first, stop) read, `group` query heads to a KV head; none for none.

    >>> _kv_span((4, 9), 3), _kv_span((2, 2), 4)
    ((1, 3), (0, 0))
    """
    first, stop = heads
    return (first // group, (stop - 1) // group + 1) if stop > first else (first // group, first // group)


def phase_work(config, plan: ShardPlan) -> Dict[str, int]:
    """The multiply-adds of one token's products that this worker computes in each phase. Every phase ends where
    the workers meet (attention and FFN at their sum, the head at its gather), so its heaviest worker sets the
    pace of all: these are the figures the split is balanced by (tests/unit/test_tensor_parallel_plan.py).

    >>> config = type("C", (), dict(dim=576, head_dim=64))                 # SmolLM2's shapes
    >>> phase_work(config, ShardPlan(1, 2, (4, 9), (1, 3), (768, 1536), (24576, 49152)))["attention"]
    516096
    """
    heads, kv_heads, ffn, vocab = (stop - start for start, stop in (plan.heads, plan.kv_heads, plan.ffn, plan.vocab))
    return {"attention": 2 * config.dim * config.head_dim * (heads + kv_heads),  # q and wo; k and v
            "ffn": 3 * config.dim * ffn,  # gate, up and down
            "head": config.dim * vocab}


class HeadBlock(NamedTuple):
    """Query heads attending in one batch: n_kv consecutive KV heads with `group` query heads each."""
    first_head: int  # this worker's first query head of the block (0 = its first)
    first_kv: int  # this worker's first KV head of the block
    n_kv: int
    group: int


def head_blocks(plan: Optional[ShardPlan], n_heads: int, n_kv_heads: int) -> List[HeadBlock]:
    """This worker's query heads as blocks of equal GQA groups; a whole model is one block.

    >>> head_blocks(None, 9, 3)
    [HeadBlock(first_head=0, first_kv=0, n_kv=3, group=3)]
    >>> head_blocks(ShardPlan(1, 2, (4, 9), (1, 3), (0, 1), (0, 1)), 9, 3)   # query heads 4..8: KV heads 1, 2
    [HeadBlock(first_head=0, first_kv=0, n_kv=1, group=2), HeadBlock(first_head=2, first_kv=1, n_kv=1, group=3)]
    """
    first, stop = plan.heads if plan else (0, n_heads)
    group = n_heads // n_kv_heads
    blocks: List[HeadBlock] = []
    for kv in range(*_kv_span((first, stop), group)):
        start, end = max(first, kv * group), min(stop, (kv + 1) * group)  # this KV head's query heads here
        if blocks and blocks[-1].group == end - start:
            blocks[-1] = blocks[-1]._replace(n_kv=blocks[-1].n_kv + 1)
        else:
            blocks.append(HeadBlock(start - first, kv - first // group, 1, end - start))
    return blocks


# ---- the shard of one matrix ---------------------------------------------------------------------------------


def row_shard(matrix: QuantizedMatrix, span: Span) -> QuantizedMatrix:
    """Rows [start, stop) of a GGUF matrix: a view of its bytes."""
    start, stop = span
    rows = matrix.raw.reshape(matrix.shape[0], matrix.row_bytes)[start:stop]
    return QuantizedMatrix(rows.reshape(-1), matrix.type_id, (stop - start, matrix.shape[1]))


class ColumnShard:
    """Columns [start, stop) of a GGUF matrix, for store_matrix to keep as a policy says. When the span is made
    of whole quantization blocks, `quantized()` gives the GGUF bytes of those columns (a copy); otherwise
    the shard can only be held dequantized (float32 or int8)."""

    def __init__(self, matrix: QuantizedMatrix, span: Span):
        self.source, (self.start, self.stop) = matrix, span
        self.type_id = matrix.type_id
        self.shape = (matrix.shape[0], self.stop - self.start)
        self.block = TYPES_BY_ID[matrix.type_id].block_size
        self.nbytes = matrix.nbytes * self.shape[1] // matrix.shape[1]  # the quantized policy's bytes

    def whole_blocks(self) -> bool:
        return self.start % self.block == 0 and self.stop % self.block == 0

    def quantized(self) -> QuantizedMatrix:
        block_bytes = TYPES_BY_ID[self.type_id].type_size
        rows = self.source.raw.reshape(self.shape[0], -1, block_bytes)  # [rows, blocks, block bytes]
        picked = np.ascontiguousarray(rows[:, self.start // self.block:self.stop // self.block])
        return QuantizedMatrix(picked.reshape(-1), self.type_id, self.shape)

    def dequantize_rows(self, start: int, stop: int) -> np.ndarray:
        return self.source.dequantize_rows(start, stop)[:, self.start:self.stop]  # [stop-start, columns]


def store_column_shard(shard: ColumnShard, policy: str) -> Matrix:
    """The shard as `policy` keeps it; "quantized" needs whole blocks, else the shard is held as int8."""
    if policy == "quantized":
        return shard.quantized() if shard.whole_blocks() else Int8Matrix.from_matrix(shard)
    return store_matrix(shard, policy)


# ---- what a worker keeps of each tensor ----------------------------------------------------------------------

# GGUF name without "blk.<i>." -> (rows or columns, which span of the ShardPlan), from the tensor schema.
# Tensors not listed (norms, RoPE factors) every worker keeps whole.
SHARDED_AS = {spec.name: spec.sharded for spec in TENSORS if spec.sharded}


class Slicer:
    """Which part of each tensor this worker keeps: everything (no plan), or its shard's rows and columns."""

    def __init__(self, plan: Optional[ShardPlan], head_dim: int):
        self.plan, self.head_dim = plan, head_dim

    def span(self, part: str) -> Span:
        """Rows of q ("heads"), of k and v ("kv_heads"), FFN units ("ffn") or vocabulary rows ("vocab")."""
        start, stop = getattr(self.plan, part)
        scale = self.head_dim if part in ("heads", "kv_heads") else 1
        return start * scale, stop * scale

    def shard(self, matrix: QuantizedMatrix, name: str):
        """The kept part of the matrix `name` (a key of SHARDED_AS), before a policy stores it."""
        if self.plan is None or name not in SHARDED_AS:
            return matrix
        cut, part = SHARDED_AS[name]
        return row_shard(matrix, self.span(part)) if cut == "rows" else ColumnShard(matrix, self.span(part))

    def store(self, matrix: QuantizedMatrix, name: str, policy: str) -> Matrix:
        kept = self.shard(matrix, name)
        if 0 in kept.shape:  # a worker beyond the query heads keeps no part of attention's matrices
            return Float32Matrix(np.zeros(kept.shape, np.float32))
        return store_column_shard(kept, policy) if isinstance(kept, ColumnShard) else store_matrix(kept, policy)

    def vector(self, vector: Optional[np.ndarray], name: str) -> Optional[np.ndarray]:
        """The kept part of a 1-D tensor (a bias is cut like its matrix's rows)."""
        if vector is None or self.plan is None or name not in SHARDED_AS:
            return vector
        start, stop = self.span(SHARDED_AS[name][1])
        return vector[start:stop].copy()
