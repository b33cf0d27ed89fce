"""LoRA adapters as llama.cpp's GGUF files: written after fine-tuning, read, checked against a base model, and
applied to a loaded model as a separate low-rank product, so that removing one is exact and immediate.

The file, as llama.cpp's convert_lora_to_gguf.py writes it and its src/llama-adapter.cpp reads it:

    general.architecture     the base model's (llama.cpp refuses an adapter made for another architecture)
    general.type             "adapter"
    adapter.type             "lora"
    adapter.lora.alpha       float32: a tensor's update is scale * alpha / rank * B @ A (alpha 0: scale * B @ A)
    <tensor>.lora_a          A [rank, in]    (ggml dims [in, rank]), for the base tensor <tensor>, e.g.
    <tensor>.lora_b          B [out, rank]   (ggml dims [rank, out]): blk.0.attn_q.weight.lora_b
    general.base_model.count, general.base_model.0.name     gguf-py's keys for the model it derives from
    pychat_wasm.base.sha256  ours: sha256 of the base file's bytes (llama.cpp has no such key and ignores it)

A tensor's rank is its B's columns, as in llama.cpp. Tensors ending in "_norm.weight" (mergekit adds them) are
skipped, as llama.cpp skips them. A base model fits an adapter when its architecture is the adapter's, every
adapted tensor exists with shape [out, in] = [B's rows, A's columns], and, where the adapter records a base
hash, the base file's sha256 is that hash; otherwise AdapterMismatchError names both.

Applied (forward.Model.set_adapters), each adapted matrix W of whatever storage policy becomes an
AdaptedMatrix: x @ W.T + sum of scale * (x @ A.T) @ B.T, the order of llama.cpp's build_lora_mm. W itself is
never changed. A fused matrix (phi3's attn_qkv) passes its B's row blocks to its parts; a worker of a split
model (tensor_parallel.py) keeps the rows of B, or the columns of A, that its shard of W has.

    >>> adapters = open_adapters(base_gguf, [(GGUFFile.open("tuned.lora.gguf"), 1.0)])  # doctest: +SKIP
    >>> model.set_adapters(adapters)                                                   # doctest: +SKIP
    >>> model.set_adapters([])                                                         # the base again  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import math
import os
import weakref
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import AdapterError, AdapterMismatchError, InvalidSettingError
from ..gguf import quants
from ..gguf.reader import GGUFFile
from ..gguf.writer import GGUFWriter
from .config import UNFUSED, ModelConfig, layer_tensors
from .matrices import Matrix
from .products import matmul, matmul_transposed
from .tensor_parallel import SHARDED_AS, ShardPlan, Slicer

BASE_HASH_KEY = "pychat_wasm.base.sha256"
SUFFIX_A, SUFFIX_B = ".lora_a", ".lora_b"
GGML_QUANT_VERSION = 2  # general.quantization_version, as llama.cpp's converters write it
Pair = Tuple[np.ndarray, np.ndarray]  # A [rank, in], B [out, rank], float32
Update = Tuple[np.ndarray, np.ndarray, float]  # A, B and the factor of B @ A


class LoraAdapter(NamedTuple):
    name: str  # the file it was read from
    arch: str
    alpha: float
    pairs: Dict[str, Pair]  # base tensor name -> (A, B)
    base_sha256: str  # "" when the file records none (llama.cpp's converter writes none)
    base_name: str  # general.base_model.0.name, or ""

    def factor(self, tensor: str, scale: float) -> float:
        """What B @ A of `tensor` is multiplied by: scale * alpha / rank, or scale when alpha is 0 (llama.cpp)."""
        rank = self.pairs[tensor][1].shape[1]
        return scale * self.alpha / rank if self.alpha else scale


_SHA256: "weakref.WeakKeyDictionary[GGUFFile, str]" = weakref.WeakKeyDictionary()


def file_sha256(gguf: GGUFFile) -> str:
    """The base identity an adapter records: sha256 of the model file's bytes, worked out once per open file
    (a model's file is hundreds of MB; every adapter applied to it asks)."""
    if gguf not in _SHA256:
        _SHA256[gguf] = hashlib.sha256(gguf.data).hexdigest()
    return _SHA256[gguf]


def base_model_name(gguf: GGUFFile) -> str:
    name = gguf.metadata.get("general.name")
    return name if isinstance(name, str) and name else os.path.basename(gguf.name)


# ---- the file ----------------------------------------------------------------------------------------------


def adapter_writer(base: GGUFFile, alpha: float, pairs: Dict[str, Pair], name: str) -> GGUFWriter:
    """An adapter file for `base` (its architecture, name and sha256 recorded) holding `pairs` as F32."""
    writer = GGUFWriter(str(base.metadata.get("general.architecture")))
    writer.add_string("general.type", "adapter")
    writer.add_string("general.name", name)
    writer.add_uint32("general.base_model.count", 1)
    writer.add_string("general.base_model.0.name", base_model_name(base))
    writer.add_string(BASE_HASH_KEY, file_sha256(base))
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    writer.add_uint32("general.quantization_version", GGML_QUANT_VERSION)
    for tensor, (a, b) in pairs.items():
        writer.add_tensor(tensor + SUFFIX_A, np.ascontiguousarray(a, np.float32))  # [rank, in]
        writer.add_tensor(tensor + SUFFIX_B, np.ascontiguousarray(b, np.float32))  # [out, rank]
    return writer


def adapter_header(gguf: GGUFFile) -> Dict[str, object]:
    """What an adapter's header says, for the page before it reads the file whole: {"architecture", "alpha",
    "base_name", "base_sha256"} (AdapterError if it is an adapter but not a LoRA one)."""
    meta = gguf.metadata
    if meta.get("adapter.type") != "lora":
        raise AdapterError("%s is an adapter of type %r; this engine applies LoRA adapters only"
                           % (gguf.name, meta.get("adapter.type")))
    return {"architecture": str(meta.get("general.architecture")), "alpha": meta.get("adapter.lora.alpha", 0.0),
            "base_name": str(meta.get("general.base_model.0.name", "")),
            "base_sha256": str(meta.get(BASE_HASH_KEY, ""))}


def read_adapter(gguf: GGUFFile) -> LoraAdapter:
    """The adapter in `gguf` (AdapterError if it is not a LoRA adapter or its tensors do not pair up)."""
    meta, where = gguf.metadata, gguf.name
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise AdapterError("%s is not a LoRA adapter: general.type is %r and adapter.type %r, where an adapter "
                           "has \"adapter\" and \"lora\"" % (where, meta.get("general.type"), meta.get("adapter.type")))
    alpha = meta.get("adapter.lora.alpha", 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise AdapterError("%s: adapter.lora.alpha must be a finite number, got %r" % (where, alpha))
    parts: Dict[str, Dict[str, np.ndarray]] = {}
    for tensor in gguf.tensors:
        if tensor.endswith("_norm.weight"):
            continue  # llama.cpp skips them too
        stem, suffix = tensor[:-len(SUFFIX_A)], tensor[-len(SUFFIX_A):]
        if suffix not in (SUFFIX_A, SUFFIX_B):
            raise AdapterError("%s: the tensor %s is neither a .lora_a nor a .lora_b" % (where, tensor))
        parts.setdefault(stem, {})[suffix] = _matrix(gguf, tensor)
    pairs = {stem: _pair(where, stem, found) for stem, found in parts.items()}
    if not pairs:
        raise AdapterError("%s holds no .lora_a / .lora_b tensors" % where)
    return LoraAdapter(where, str(meta.get("general.architecture")), float(alpha), pairs,
                       str(meta.get(BASE_HASH_KEY, "")), str(meta.get("general.base_model.0.name", "")))


def _matrix(gguf: GGUFFile, tensor: str) -> np.ndarray:
    info = gguf.tensors[tensor]
    if len(info.shape) != 2:
        raise AdapterError("%s: %s has %d dimensions, not 2" % (gguf.name, tensor, len(info.shape)))
    value = np.asarray(quants.dequantize(gguf.tensor_bytes(tensor), info.type_id, info.shape), np.float32)
    if not np.isfinite(value).all():
        raise AdapterError("%s: %s holds NaN or infinite values" % (gguf.name, tensor))
    return value


def _pair(where: str, stem: str, found: Dict[str, np.ndarray]) -> Pair:
    if len(found) < 2:
        missing = SUFFIX_B if SUFFIX_A in found else SUFFIX_A
        raise AdapterError("%s: %s%s is missing (LoRA tensors come in pairs)" % (where, stem, missing))
    a, b = found[SUFFIX_A], found[SUFFIX_B]
    if stem.endswith("token_embd.weight"):
        raise AdapterError("%s adapts token_embd.weight, which this engine does not do (only matrices that "
                           "multiply activations)" % where)
    if a.shape[0] != b.shape[1]:
        raise AdapterError("%s: %s has A [%d, %d] and B [%d, %d]: A's rows and B's columns are the rank and must "
                           "agree" % ((where, stem) + a.shape + b.shape))
    return a, b


# ---- checked against a base --------------------------------------------------------------------------------


def check_base(adapter: LoraAdapter, base: GGUFFile) -> None:
    """AdapterMismatchError unless `base` is a model `adapter` fits (see the module docstring)."""
    arch = base.metadata.get("general.architecture")
    if adapter.arch != arch:
        raise AdapterMismatchError("%s is a LoRA adapter for a %s model, and %s is a %s model"
                                   % (adapter.name, adapter.arch, base.name, arch))
    for tensor, (a, b) in adapter.pairs.items():
        info = base.tensors.get(tensor)
        if info is None:
            raise AdapterMismatchError("%s adapts %s, which %s does not have" % (adapter.name, tensor, base.name))
        if tuple(info.shape) != (b.shape[0], a.shape[1]):
            raise AdapterMismatchError("%s adapts %s of shape [%d, %d]; in %s it is %s"
                                       % (adapter.name, tensor, b.shape[0], a.shape[1], base.name, list(info.shape)))
    if not adapter.base_sha256:
        return
    base_sha256 = file_sha256(base)
    if adapter.base_sha256 != base_sha256:
        raise AdapterMismatchError("%s was made for %s (sha256 %s), not for %s (sha256 %s)"
                                   % (adapter.name, adapter.base_name or "another file", adapter.base_sha256[:16],
                                      base.name, base_sha256[:16]))


def checked_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise InvalidSettingError("a LoRA scale must be a finite number, got %r" % (scale,))
    return float(scale)


def open_adapters(base: GGUFFile, files: Sequence[Tuple[GGUFFile, float]]) -> List[Tuple[LoraAdapter, float]]:
    """Read each adapter file and check it against `base`."""
    adapters = [(read_adapter(file), checked_scale(scale)) for file, scale in files]
    for adapter, _ in adapters:
        check_base(adapter, base)
    return adapters


# ---- applied to a loaded model -----------------------------------------------------------------------------


class AdaptedMatrix:
    """A stored matrix (any policy of matrices.py) and low-rank updates beside it, never added into it."""

    def __init__(self, base: Matrix, updates: Sequence[Update]):
        self.base, self.updates = base, list(updates)
        self.shape = base.shape

    @property
    def nbytes(self) -> int:
        return int(self.base.nbytes) + sum(a.nbytes + b.nbytes for a, b, _ in self.updates)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        out = self.base.matmul(x)  # [n, out]
        for a, b, factor in self.updates:
            out += np.float32(factor) * matmul_transposed(matmul_transposed(x, a), b)  # [n, in] -> [n, r] -> [n, out]
        return out

    def dequantize_rows(self, start: int, stop: int) -> np.ndarray:
        rows = np.array(self.base.dequantize_rows(start, stop), np.float32)  # [stop-start, in]
        for a, b, factor in self.updates:
            rows += np.float32(factor) * matmul(b[start:stop], a)  # [rows, r] @ [r, in]
        return rows


def _layer_matrices(config: ModelConfig) -> Dict[str, List[Tuple[str, int, int, Optional[Tuple[str, str]]]]]:
    """A layer's matrix name without "blk.<i>." -> the stored matrices it is made of: (LayerWeights field, first
    row, rows, how a shard cuts them); one for most, one per part for a fused matrix (phi3's attn_qkv)."""
    found = {}
    for spec, shape, _ in layer_tensors(config):
        if len(shape) == 2:
            firsts = np.cumsum([0] + [UNFUSED[part].shape(config)[0] for part in spec.holds or (spec.name,)])
            found[spec.name] = [(UNFUSED[part].field, int(first), int(rows), SHARDED_AS.get(part))
                                for part, first, rows in zip(spec.holds or (spec.name,), firsts, np.diff(firsts))]
    return found


def low_rank_updates(adapters: Sequence[Tuple[LoraAdapter, float]], config: ModelConfig,
                     shard: Optional[ShardPlan] = None) -> Dict[Tuple[int, str], List[Update]]:
    """(layer, weights.LayerWeights field) -> updates, layer -1 and field "output" for the output head; cut to
    `shard`'s part. AdapterError for a tensor the engine cannot adapt, before anything is applied."""
    fields = _layer_matrices(config)
    slicer = Slicer(shard, config.head_dim)
    updates: Dict[Tuple[int, str], List[Update]] = {}
    for adapter, scale in adapters:
        for tensor, (a, b) in adapter.pairs.items():
            for key, a_part, b_part, sharded in _targets(adapter.name, tensor, a, b, fields, config):
                if shard is not None and sharded is not None:
                    start, stop = slicer.span(sharded[1])
                    if sharded[0] == "rows":
                        b_part = b_part[start:stop]
                    else:
                        a_part = a_part[:, start:stop]
                update = (np.ascontiguousarray(a_part), np.ascontiguousarray(b_part), adapter.factor(tensor, scale))
                updates.setdefault(key, []).append(update)
    return updates


def _targets(where: str, tensor: str, a: np.ndarray, b: np.ndarray, fields, config: ModelConfig):
    """(key, A, B's rows for it, how a shard cuts it) of each stored matrix the adapted `tensor` reaches."""
    if tensor == "output.weight":
        return [((-1, "output"), a, b, SHARDED_AS["output.weight"])]
    blk, _, rest = tensor.partition(".")
    layer, _, name = rest.partition(".")
    if blk != "blk" or not layer.isdigit() or int(layer) >= config.n_layers or name not in fields:
        raise AdapterError("%s adapts %s: this engine applies adapters to the layers' matrices and output.weight"
                           % (where, tensor))
    return [((int(layer), field), a, b[first:first + rows], sharded) for field, first, rows, sharded in fields[name]]
