"""Load-time checks: a model file must agree with its own architecture before any weight is used.

A GGUF header can say anything. Like llama.cpp's loader, we check every tensor the architecture reads
against the shape its metadata implies, so a file that lies fails at load with a message naming the
tensor, instead of crashing mid-chat in a reshape or asking numpy for terabytes:

    hyperparameters  integers where integers belong, positive, head counts that divide, finite floats
    tensors          each required one present, each known one (required or optional) exactly its shape
    vocabulary       as many tokens as the embedding has rows (and as `<arch>.vocab_size` says)
    weights          no NaN or infinite values (read from the block scales, so it costs one pass)

    >>> check_model(gguf, ModelConfig.from_gguf(gguf))    # raises InvalidModelError  # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import GGUFError, InvalidModelError
from ..gguf.ggml_types import TYPES_BY_NAME
from ..gguf.reader import GGUFFile
from ..gguf.quants import block_format

if TYPE_CHECKING:
    from .forward import ModelConfig

_REQUIRED = object()
LAYER_TENSORS_AT_LEAST = 9  # norms, q, k, v, output, gate, up, down: every layer has these
MAX_RMS_EPS = 1.0  # real models use 1e-5 or 1e-6; anything this large is a corrupt header


# ----------------------------------------------------------------------------------------------
# Typed metadata values


def metadata_int(gguf_file: GGUFFile, suffix: str, default: Any = _REQUIRED) -> int:
    """The integer `<arch>.<suffix>`; GGUFError if it is missing (and required) or not an integer."""
    value = _metadata(gguf_file, suffix, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidModelError("%s: metadata %s must be an integer, got %r: the file is corrupt"
                                % (gguf_file.name, _key(gguf_file, suffix), short_value(value)))
    return value


def metadata_float(gguf_file: GGUFFile, suffix: str, default: Any = _REQUIRED) -> float:
    """The finite number `<arch>.<suffix>`; GGUFError if it is missing (and required), not a number or not finite."""
    value = _metadata(gguf_file, suffix, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidModelError("%s: metadata %s must be a finite number, got %r: the file is corrupt"
                                % (gguf_file.name, _key(gguf_file, suffix), short_value(value)))
    return float(value)


def _metadata(gguf_file: GGUFFile, suffix: str, default: Any) -> Any:
    value = gguf_file.arch_value(suffix)
    if value is None:
        if default is _REQUIRED:
            raise GGUFError("%s lacks the metadata key %s" % (gguf_file.name, _key(gguf_file, suffix)))
        return default
    return value


def _key(gguf_file: GGUFFile, suffix: str) -> str:
    return "%s.%s" % (gguf_file.metadata.get("general.architecture"), suffix)


def short_value(value: Any) -> Any:
    """A metadata value cut short enough to quote in a message."""
    return value[:8] if isinstance(value, (list, str)) else value


# ----------------------------------------------------------------------------------------------
# Hyperparameters


def check_config(config: "ModelConfig", gguf_file: GGUFFile) -> None:
    """Hyperparameters the forward pass can run with, before any tensor is looked at."""
    name = gguf_file.name
    for field in ("n_layers", "dim", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size",
                  "trained_context_length"):
        if getattr(config, field) < 1:
            raise InvalidModelError("%s: %s is %d, it must be at least 1: the file is corrupt"
                                    % (name, field, getattr(config, field)))
    if config.n_heads % config.n_kv_heads:
        raise InvalidModelError("%s: head_count %d is not a multiple of head_count_kv %d: the file is corrupt"
                                % (name, config.n_heads, config.n_kv_heads))
    if config.head_dim % 2:
        raise InvalidModelError("%s: the head dimension %d is odd, RoPE needs pairs: the file is corrupt"
                                % (name, config.head_dim))
    if not 0.0 <= config.rms_eps <= MAX_RMS_EPS:
        raise InvalidModelError("%s: layer_norm_rms_epsilon %g is outside [0, %g]: the file is corrupt"
                                % (name, config.rms_eps, MAX_RMS_EPS))
    if config.rope_base <= 0.0:
        raise InvalidModelError("%s: rope.freq_base %g must be positive: the file is corrupt"
                                % (name, config.rope_base))
    if config.sliding_window < 0:
        raise InvalidModelError("%s: attention.sliding_window %d is negative: the file is corrupt"
                                % (name, config.sliding_window))
    if metadata_int(gguf_file, "attention.value_length", config.head_dim) != config.head_dim:
        raise InvalidModelError("%s: attention.value_length differs from key_length, which this engine does "
                                "not support" % name)
    if metadata_int(gguf_file, "rope.dimension_count", config.head_dim) != config.head_dim:
        raise InvalidModelError("%s: rope.dimension_count differs from the head dimension %d (partial RoPE), "
                                "which this engine does not support" % (name, config.head_dim))


# ----------------------------------------------------------------------------------------------
# Tensors


def expected_shapes(config: "ModelConfig") -> Iterator[Tuple[str, Tuple[int, ...], bool]]:
    """(name, numpy shape, required) of every tensor the forward pass may read, in llama.cpp's naming.

    Optional tensors (q/k/v biases, rope_freqs, a separate output head) are used when present, as in llama.cpp.
    """
    c = config
    q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    gemma = c.arch == "gemma3"
    yield "token_embd.weight", (c.vocab_size, c.dim), True
    yield "output_norm.weight", (c.dim,), True
    yield "output.weight", (c.vocab_size, c.dim), False
    yield "rope_freqs.weight", (c.head_dim // 2,), False
    for i in range(c.n_layers):
        blk = "blk.%d." % i
        yield blk + "attn_norm.weight", (c.dim,), True
        yield blk + "attn_q.weight", (q_dim, c.dim), True
        yield blk + "attn_k.weight", (kv_dim, c.dim), True
        yield blk + "attn_v.weight", (kv_dim, c.dim), True
        yield blk + "attn_output.weight", (c.dim, q_dim), True
        yield blk + "ffn_norm.weight", (c.dim,), True
        yield blk + "ffn_gate.weight", (c.ffn_dim, c.dim), True
        yield blk + "ffn_up.weight", (c.ffn_dim, c.dim), True
        yield blk + "ffn_down.weight", (c.dim, c.ffn_dim), True
        for bias, size in (("attn_q.bias", q_dim), ("attn_k.bias", kv_dim), ("attn_v.bias", kv_dim)):
            yield blk + bias, (size,), False  # qwen2 files have them, but llama.cpp runs without them too
        yield blk + "attn_q_norm.weight", (c.head_dim,), gemma
        yield blk + "attn_k_norm.weight", (c.head_dim,), gemma
        yield blk + "post_attention_norm.weight", (c.dim,), gemma
        yield blk + "post_ffw_norm.weight", (c.dim,), gemma


def check_model(gguf_file: GGUFFile, config: "ModelConfig") -> None:
    """Raise InvalidModelError unless every tensor the model reads is there, shaped and finite."""
    name = gguf_file.name
    if config.n_layers > len(gguf_file.tensors) // LAYER_TENSORS_AT_LEAST:
        raise InvalidModelError("%s: block_count is %d, but its %d tensors cannot hold that many layers: "
                                "the file is corrupt" % (name, config.n_layers, len(gguf_file.tensors)))
    used: List[str] = []
    for tensor, shape, required in expected_shapes(config):
        info = gguf_file.tensors.get(tensor)
        if info is None:
            if required:
                raise InvalidModelError("%s lacks the tensor %s (shape %s), which %s needs: the file is "
                                        "incomplete or corrupt" % (name, tensor, shape, config.arch))
            continue
        if info.shape != shape:
            raise InvalidModelError("%s: tensor %s has shape %s, but the metadata implies %s (%s): the file "
                                    "is corrupt" % (name, tensor, info.shape, shape, _dims_text(config)))
        used.append(tensor)
    _check_pairs(gguf_file, config)
    _check_vocabulary(gguf_file, config)
    for tensor in used:
        bad = count_nonfinite(gguf_file.tensor_bytes(tensor), gguf_file.tensors[tensor].type_id)
        if bad:
            raise InvalidModelError("%s: tensor %s holds NaN or infinite values (%d blocks): the file is corrupt"
                                    % (name, tensor, bad))


def _dims_text(c: "ModelConfig") -> str:
    return ("vocab %d, embedding_length %d, head_count %d, head_count_kv %d, head dim %d, feed_forward_length %d"
            % (c.vocab_size, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim))


def _check_pairs(gguf_file: GGUFFile, config: "ModelConfig") -> None:
    """Query and key norms only work together."""
    for i in range(config.n_layers):
        blk = "blk.%d." % i
        q, k = blk + "attn_q_norm.weight", blk + "attn_k_norm.weight"
        if (q in gguf_file.tensors) != (k in gguf_file.tensors):
            missing = k if q in gguf_file.tensors else q
            raise InvalidModelError("%s lacks the tensor %s (shape (%d,)), the pair of the one it has: the file "
                                    "is corrupt" % (gguf_file.name, missing, config.head_dim))


def _check_vocabulary(gguf_file: GGUFFile, config: "ModelConfig") -> None:
    tokens = gguf_file.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and len(tokens) != config.vocab_size:
        raise InvalidModelError("%s: the tokenizer has %d tokens but token_embd.weight has %d rows: the file is "
                                "corrupt" % (gguf_file.name, len(tokens), config.vocab_size))
    stated: Optional[Any] = gguf_file.arch_value("vocab_size")
    if stated is not None and stated != config.vocab_size:
        raise InvalidModelError("%s: metadata %s is %r but token_embd.weight has %d rows: the file is corrupt"
                                % (gguf_file.name, _key(gguf_file, "vocab_size"), short_value(stated), config.vocab_size))


# ----------------------------------------------------------------------------------------------
# Weights


def count_nonfinite(raw: np.ndarray, type_id: int) -> int:
    """How many values (or blocks) of a tensor's raw bytes are NaN or infinite.

    A quantized block's weights are integer codes times (plus) its float16 scales, so they are finite
    exactly when the scales are: reading the scale fields answers for the whole block.

    >>> count_nonfinite(np.array([1.0, np.nan, np.inf], np.float32).view(np.uint8), 0)
    2
    """
    block = block_format(type_id).block
    blocks = raw.view(block)  # [n_blocks] (or [n] for plain float types)
    if type_id == TYPES_BY_NAME["BF16"].id:  # stored as uint16: exponent bits all set
        return int(np.count_nonzero((blocks & 0x7F80) == 0x7F80))
    if block.fields is None:
        return int(np.count_nonzero(~np.isfinite(blocks)))
    bad = np.zeros(blocks.shape, dtype=bool)
    for field, spec in block.fields.items():
        if spec[0].kind == "f":  # the float16 scales; codes are integers
            bad |= ~np.isfinite(blocks[field])
    return int(np.count_nonzero(bad))
