"""Load-time checks: a model file must agree with its own architecture before any weight is used.

A GGUF header can say anything. Like llama.cpp's loader, we check every tensor the architecture reads
(config.TENSORS) against the shape its metadata implies, so a file that lies fails at load with a message naming the
tensor, instead of crashing mid-chat in a reshape or asking numpy for terabytes:

    hyperparameters  integers where integers belong, positive, head counts that divide, finite floats
    tensors          each required one present, each known one (required or optional) exactly its shape
    vocabulary       as many tokens as the embedding has rows (and as `<arch>.vocab_size` says)
    weights          no NaN or infinite values (read from the block scales, so it costs one pass)

    >>> check_model(gguf, ModelConfig.from_gguf(gguf))    # raises InvalidModelError  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from ..errors import InvalidModelError, UnsupportedArchitectureError
from ..gguf.ggml_types import TYPES_BY_NAME
from ..gguf.reader import GGUFFile
from ..gguf.quants import block_format
from .config import UNSUPPORTED_TENSORS, ModelConfig, dims_text, expected_shapes, layer_tensors, short_value


def check_model(gguf_file: GGUFFile, config: ModelConfig) -> None:
    """Raise InvalidModelError unless every tensor the model reads is there, shaped and finite."""
    name = gguf_file.name
    for tensor, variant in UNSUPPORTED_TENSORS.items():
        if tensor in gguf_file.tensors:
            raise UnsupportedArchitectureError("%s uses %s (the tensor %s), which this engine does not support"
                                               % (name, variant, tensor))
    per_layer = sum(required for _, _, required in layer_tensors(config))
    if config.n_layers > len(gguf_file.tensors) // per_layer:
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
                                    "is corrupt" % (name, tensor, info.shape, shape, dims_text(config)))
        used.append(tensor)
    _check_pairs(gguf_file, config)
    _check_vocabulary(gguf_file, config)
    for tensor in used:
        bad = count_nonfinite(gguf_file.tensor_bytes(tensor), gguf_file.tensors[tensor].type_id)
        if bad:
            raise InvalidModelError("%s: tensor %s holds NaN or infinite values (%d blocks): the file is corrupt"
                                    % (name, tensor, bad))


def _check_pairs(gguf_file: GGUFFile, config: ModelConfig) -> None:
    """Query and key norms only work together."""
    for i in range(config.n_layers):
        blk = "blk.%d." % i
        q, k = blk + "attn_q_norm.weight", blk + "attn_k_norm.weight"
        if (q in gguf_file.tensors) != (k in gguf_file.tensors):
            missing = k if q in gguf_file.tensors else q
            raise InvalidModelError("%s lacks the tensor %s (shape (%d,)), the pair of the one it has: the file "
                                    "is corrupt" % (gguf_file.name, missing, config.head_dim))


def _check_vocabulary(gguf_file: GGUFFile, config: ModelConfig) -> None:
    tokens = gguf_file.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and len(tokens) != config.vocab_size:
        raise InvalidModelError("%s: the tokenizer has %d tokens but token_embd.weight has %d rows: the file is "
                                "corrupt" % (gguf_file.name, len(tokens), config.vocab_size))
    stated: Optional[Any] = gguf_file.arch_value("vocab_size")
    if stated is not None and stated != config.vocab_size:
        raise InvalidModelError("%s: metadata %s.vocab_size is %r but token_embd.weight has %d rows: the file is "
                                "corrupt" % (gguf_file.name, config.arch, short_value(stated), config.vocab_size))


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
