"""Write a trained model as a complete GGUF file that pychat_wasm, transformers and llama.cpp all load.

What goes in (llama.cpp's key names): the architecture's hyperparameters, the tokenizer (tokens, token
types, merges, special ids), the chat template, and every tensor under its GGUF name. Parameters are
already in GGUF's layout (q/k rows in the interleaved RoPE order), so they are written as they are;
a tied output head is simply left out (no `output.weight`). Matrices may be stored as F16 or Q8_0; norms
and biases stay F32.

    >>> writer = gguf_writer_for(cfg, params, tokenizer_metadata, "my-model")    # doctest: +SKIP
    >>> writer.write("my-model.gguf")                                           # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..errors import InvalidSettingError
from ..gguf.writer import GGUFWriter, ValueType
from ..model.config import HYPERPARAMETERS, ModelConfig

# general.file_type: llama.cpp's llama_ftype for "all matrices in this type"
FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7}
QUANT_BLOCK = 32  # Q8_0 quantizes rows in blocks of 32 weights


def add_metadata_value(writer: GGUFWriter, key: str, value: Any) -> None:
    """Add `value` with the GGUF type llama.cpp expects for such a value (ids u32, token types i32, ...)."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        if value >= 0:
            writer.add_uint32(key, value)
        else:
            writer.add_int32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        writer.add_array(key, value, ValueType.STRING)
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], float):
        writer.add_array(key, value, ValueType.FLOAT32)
    elif isinstance(value, (list, tuple, np.ndarray)):
        writer.add_array(key, [int(v) for v in value], ValueType.INT32)
    else:
        raise InvalidSettingError("cannot write metadata %s of type %s" % (key, type(value).__name__))


def tensor_type(array: np.ndarray, ggml_type: str) -> str:
    """Matrices in the export's type (Q8_0 only where rows fill whole blocks); vectors stay F32."""
    if array.ndim < 2 or (ggml_type == "Q8_0" and array.shape[-1] % QUANT_BLOCK):
        return "F32"
    return ggml_type


def model_writer(arch: str, metadata: Dict[str, Any], tensors: Dict[str, np.ndarray], ggml_type: str) -> GGUFWriter:
    """A GGUFWriter with `metadata` (typed by add_metadata_value) and `tensors` stored as tensor_type says."""
    if ggml_type not in FILE_TYPES:
        raise InvalidSettingError("export type must be one of %s, got %r" % (", ".join(FILE_TYPES), ggml_type))
    writer = GGUFWriter(arch)
    writer.add_uint32("general.file_type", FILE_TYPES[ggml_type])
    for key, value in metadata.items():
        add_metadata_value(writer, key, value)
    for name, array in tensors.items():
        if name.endswith((".lora_a", ".lora_b")):
            raise InvalidSettingError("merge the LoRA adapters before export (%s)" % name)
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32), tensor_type(array, ggml_type))
    return writer


def gguf_writer_for(cfg: ModelConfig, params: Dict[str, np.ndarray], tokenizer_metadata: Dict[str, Any],
                    name: str, ggml_type: str = "F32") -> GGUFWriter:
    """A GGUFWriter holding a model trained from scratch; call .write(path) or .to_bytes()."""
    metadata: Dict[str, Any] = {"general.name": name}
    for row in HYPERPARAMETERS:  # every key ModelConfig.from_gguf reads; no window is no key
        value = getattr(cfg, row.field)
        if row.field != "sliding_window" or value:
            metadata["%s.%s" % (cfg.arch, row.key)] = row.kind(value)
    metadata.update(tokenizer_metadata)
    return model_writer(cfg.arch, metadata, params, ggml_type)
