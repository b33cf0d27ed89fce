"""The model's weights read from a GGUF file: the parameter tree mirrors the forward pass's call tree.

Which tensors a layer has, and their shapes, is config.TENSORS's to say. The big matrices are kept as a
storage policy says (matrices.py); a worker of a sharded model (tensor_parallel.py) keeps only its rows
and columns of them.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import numpy as np

from ..gguf import quants
from ..errors import GGUFError
from ..gguf.reader import GGUFFile, TensorInfo
from .config import LAYER_TENSORS, UNFUSED, ModelConfig, layer_tensors
from .matrices import Matrix, QuantizedMatrix
from .tensor_parallel import ShardPlan, Slicer, row_shard


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
    """One layer's weights; each field is a config.LAYER_TENSORS row's `field` (None: the file has none)."""
    attn_norm: np.ndarray  # [dim]
    wq: Matrix  # [n_heads * head_dim, dim]
    wk: Matrix  # [n_kv_heads * head_dim, dim]
    wv: Matrix  # [n_kv_heads * head_dim, dim]
    wo: Matrix  # [dim, n_heads * head_dim]
    q_bias: Optional[np.ndarray]  # qwen2 [n_heads * head_dim]
    k_bias: Optional[np.ndarray]
    v_bias: Optional[np.ndarray]
    q_norm: Optional[np.ndarray]  # gemma3, qwen3: RMSNorm of each head's query [head_dim]
    k_norm: Optional[np.ndarray]
    post_attn_norm: Optional[np.ndarray]  # gemma3: norm of the attention output [dim]
    ffn_norm: np.ndarray  # [dim]
    w_gate: Matrix  # [ffn_dim, dim]
    w_up: Matrix  # [ffn_dim, dim]
    w_down: Matrix  # [dim, ffn_dim]
    post_ffn_norm: Optional[np.ndarray]  # gemma3


def layer_matrices(gguf_file: GGUFFile, config: ModelConfig, i: int) -> Dict[str, QuantizedMatrix]:
    """Layer i's matrices by GGUF name without "blk.<i>.", as the file stores them; a fused tensor (phi3's
    attn_qkv, its gate-and-up ffn_up) is cut into the row blocks it holds, views of its bytes."""
    blk, found = "blk.%d." % i, {}
    for spec, shape, _ in layer_tensors(config):
        if len(shape) != 2 or blk + spec.name not in gguf_file.tensors:
            continue
        matrix = gguf_matrix(gguf_file, blk + spec.name)
        if not spec.holds:
            found[spec.name] = matrix
            continue
        start = 0
        for part in spec.holds:
            rows = UNFUSED[part].shape(config)[0]
            found[part] = row_shard(matrix, (start, start + rows))
            start += rows
    return found


def load_layer(gguf_file: GGUFFile, config: ModelConfig, i: int, policy: str,
               plan: Optional[ShardPlan] = None) -> LayerWeights:
    """Layer i's weights as `policy` keeps them (a worker's part of them with a ShardPlan), per config.TENSORS."""
    part, matrices = Slicer(plan, config.head_dim), layer_matrices(gguf_file, config, i)
    read = {spec.name for spec, _, _ in layer_tensors(config)}  # what this architecture reads
    fields = {}
    for spec in (s for s in LAYER_TENSORS if s.field):  # a fused tensor's parts have their own rows
        if spec.name in matrices:
            fields[spec.field] = part.store(matrices[spec.name], spec.name, policy)
        else:  # a vector (None when the file has none), or a tensor this architecture never reads
            vector = gguf_vector(gguf_file, "blk.%d.%s" % (i, spec.name)) if spec.name in read else None
            fields[spec.field] = part.vector(vector, spec.name)
    return LayerWeights(**fields)


def output_head_name(gguf_file: GGUFFile) -> str:
    """The output head's tensor: output.weight, or the token embedding when the two are tied."""
    return "output.weight" if "output.weight" in gguf_file.tensors else "token_embd.weight"


def load_output_head(gguf_file: GGUFFile, embedding: QuantizedMatrix, policy: str,
                     plan: Optional[ShardPlan] = None) -> Matrix:
    """The output head as `policy` keeps it; tied to the token embedding when the file has no output.weight."""
    name = output_head_name(gguf_file)
    head = embedding if name == "token_embd.weight" else gguf_matrix(gguf_file, name)
    return Slicer(plan, 1).store(head, "output.weight", policy)


def stored_matrix_infos(gguf_file: GGUFFile) -> List[TensorInfo]:
    """Every matrix the forward pass multiplies with (kept as the policy says); token_embd only when it is
    the output head. From the header alone: the fit check (fit_check.py) sizes them before any download."""
    head = output_head_name(gguf_file)
    return [info for name, info in gguf_file.tensors.items()
            if len(info.shape) == 2 and (name.startswith("blk.") or name == head)]


def matrices_to_store(gguf_file: GGUFFile, config: ModelConfig, plan: Optional[ShardPlan] = None) -> list:
    """What this worker will keep of each stored matrix, before any is built (the fit check sizes them)."""
    part = Slicer(plan, config.head_dim)
    kept = [part.shard(matrix, name) for i in range(config.n_layers)
            for name, matrix in layer_matrices(gguf_file, config, i).items()]
    head = output_head_name(gguf_file)
    return kept + [part.shard(gguf_matrix(gguf_file, head), head)]
