"""The model's weights read from a GGUF file: the parameter tree mirrors the forward pass's call tree.

The big matrices are kept as a storage policy says (weights.py); a worker of a sharded model
(tensor_parallel.py) keeps only its rows and columns of them.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import numpy as np

from ..gguf import quants
from ..errors import GGUFError
from ..gguf.reader import GGUFFile, TensorInfo
from .tensor_parallel import ColumnShard, ShardPlan, Span, row_shard, store_column_shard
from .matrices import Matrix, QuantizedMatrix, store_matrix


def gguf_matrix(gguf_file: GGUFFile, name: str) -> QuantizedMatrix:
    info = gguf_file.tensors.get(name)
    if info is None:
        raise GGUFError("%s lacks the tensor %s" % (gguf_file.name, name))
    return QuantizedMatrix(gguf_file.tensor_bytes(name), info.type_id, info.shape)


def gguf_vector(gguf_file: GGUFFile, name: str) -> Optional[np.ndarray]:
    """A 1-D tensor (norm weights, biases) as float32, or None if the architecture has none."""
    info = gguf_file.tensors.get(name)
    if info is None:
        return None
    return np.array(quants.dequantize(gguf_file.tensor_bytes(name), info.type_id, info.shape), dtype=np.float32)


class LayerWeights(NamedTuple):
    attn_norm: np.ndarray  # [dim]
    wq: Matrix  # [n_heads * head_dim, dim]
    wk: Matrix  # [n_kv_heads * head_dim, dim]
    wv: Matrix  # [n_kv_heads * head_dim, dim]
    wo: Matrix  # [dim, n_heads * head_dim]
    q_bias: Optional[np.ndarray]  # qwen2
    k_bias: Optional[np.ndarray]
    v_bias: Optional[np.ndarray]
    q_norm: Optional[np.ndarray]  # gemma3: RMSNorm of each head's query [head_dim]
    k_norm: Optional[np.ndarray]
    post_attn_norm: Optional[np.ndarray]  # gemma3: norm of the attention output [dim]
    ffn_norm: np.ndarray  # [dim]
    w_gate: Matrix  # [ffn_dim, dim]
    w_up: Matrix  # [ffn_dim, dim]
    w_down: Matrix  # [dim, ffn_dim]
    post_ffn_norm: Optional[np.ndarray]  # gemma3


# How a worker of a sharded model cuts each matrix: (rows or columns, of which span of its ShardPlan).
SHARDED_AS = {"attn_q": ("rows", "heads"), "attn_k": ("rows", "kv_heads"), "attn_v": ("rows", "kv_heads"),
              "attn_output": ("columns", "heads"), "ffn_gate": ("rows", "ffn"), "ffn_up": ("rows", "ffn"),
              "ffn_down": ("columns", "ffn"), "output": ("rows", "vocab"), "token_embd": ("rows", "vocab")}


class _Slicer:
    """Which part of each tensor this worker keeps: everything, or its shard's rows and columns."""

    def __init__(self, plan: Optional[ShardPlan], head_dim: int):
        self.plan, self.head_dim = plan, head_dim

    def span(self, part: str) -> Span:
        """Rows of q ("heads"), of k and v ("kv_heads"), FFN units ("ffn") or vocabulary rows ("vocab")."""
        start, stop = getattr(self.plan, part)
        scale = self.head_dim if part in ("heads", "kv_heads") else 1
        return start * scale, stop * scale

    def shard(self, matrix: QuantizedMatrix, kind: str):
        """The kept part of the matrix `kind` (a key of SHARDED_AS), before a policy stores it."""
        if self.plan is None or kind not in SHARDED_AS:
            return matrix
        cut, part = SHARDED_AS[kind]
        return row_shard(matrix, self.span(part)) if cut == "rows" else ColumnShard(matrix, self.span(part))

    def store(self, matrix: QuantizedMatrix, kind: str, policy: str) -> Matrix:
        kept = self.shard(matrix, kind)
        return store_column_shard(kept, policy) if isinstance(kept, ColumnShard) else store_matrix(kept, policy)

    def vector(self, vector: Optional[np.ndarray], part: str) -> Optional[np.ndarray]:
        if vector is None or self.plan is None:
            return vector
        start, stop = self.span(part)
        return vector[start:stop].copy()


def load_layer(gguf_file: GGUFFile, i: int, policy: str, head_dim: int,
               plan: Optional[ShardPlan] = None) -> LayerWeights:
    blk = "blk.%d." % i
    part = _Slicer(plan, head_dim)
    matrix = lambda kind: part.store(gguf_matrix(gguf_file, blk + kind + ".weight"), kind, policy)  # noqa: E731
    vector = lambda name: gguf_vector(gguf_file, blk + name)  # noqa: E731
    return LayerWeights(
        attn_norm=vector("attn_norm.weight"),
        wq=matrix("attn_q"), wk=matrix("attn_k"), wv=matrix("attn_v"), wo=matrix("attn_output"),
        q_bias=part.vector(vector("attn_q.bias"), "heads"), k_bias=part.vector(vector("attn_k.bias"), "kv_heads"),
        v_bias=part.vector(vector("attn_v.bias"), "kv_heads"),
        q_norm=vector("attn_q_norm.weight"), k_norm=vector("attn_k_norm.weight"),
        post_attn_norm=vector("post_attention_norm.weight"),
        ffn_norm=vector("ffn_norm.weight"),
        w_gate=matrix("ffn_gate"), w_up=matrix("ffn_up"), w_down=matrix("ffn_down"),
        post_ffn_norm=vector("post_ffw_norm.weight"))


def output_head_name(gguf_file: GGUFFile) -> str:
    """The output head's tensor: output.weight, or the token embedding when the two are tied."""
    return "output.weight" if "output.weight" in gguf_file.tensors else "token_embd.weight"


def load_output_head(gguf_file: GGUFFile, embedding: QuantizedMatrix, policy: str,
                     plan: Optional[ShardPlan] = None) -> Matrix:
    """The output head as `policy` keeps it; tied to the token embedding when the file has no output.weight."""
    name = output_head_name(gguf_file)
    head = embedding if name == "token_embd.weight" else gguf_matrix(gguf_file, name)
    return _Slicer(plan, 1).store(head, "output", policy)


def stored_matrix_infos(gguf_file: GGUFFile) -> List[TensorInfo]:
    """Every matrix the forward pass multiplies with (kept as the policy says); token_embd only when it is
    the output head. From the header alone: the fit check (fit_check.py) sizes them before any download."""
    head = output_head_name(gguf_file)
    return [info for name, info in gguf_file.tensors.items()
            if len(info.shape) == 2 and (name.startswith("blk.") or name == head)]


def matrices_to_store(gguf_file: GGUFFile, plan: Optional[ShardPlan] = None, head_dim: int = 1) -> list:
    """What this worker will keep of each stored matrix, before any is built (choose_policy's estimate)."""
    part = _Slicer(plan, head_dim)
    return [part.shard(gguf_matrix(gguf_file, info.name), info.name.split(".")[-2])
            for info in stored_matrix_infos(gguf_file)]
