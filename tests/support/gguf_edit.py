"""Copy a GGUF file with gguf-py (its reader and writer, independent of ours), changing one thing on the way.

    >>> rewrite_gguf(src, dst, metadata={"llama.attention.head_count": 3})          # doctest: +SKIP
    >>> rewrite_gguf(src, dst, tensors={"blk.0.ffn_norm.weight": None})  # drops it     # doctest: +SKIP
    >>> rewrite_gguf(src, dst, tensors={"blk.0.attn_k.weight": np.zeros((16, 64), np.float32)})  # doctest: +SKIP

A metadata value of None drops the key (a new key is added); a tensor given as a float32 array replaces the
file's (any shape) or, with a new name, is added; None drops it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

_SCALAR_TYPES = {float: GGUFValueType.FLOAT32, str: GGUFValueType.STRING}


def _value_type(value: Any) -> GGUFValueType:
    if isinstance(value, int):
        return GGUFValueType.UINT32 if value < 2 ** 32 else GGUFValueType.UINT64
    return _SCALAR_TYPES[type(value)]


def rewrite_gguf(src: Path, dst: Path, metadata: Optional[Dict[str, Any]] = None,
                 tensors: Optional[Dict[str, Optional[np.ndarray]]] = None) -> Path:
    metadata, tensors = metadata or {}, tensors or {}
    reader = GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(dst), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name in metadata:
            value = metadata.pop(name)
            if value is not None:
                writer.add_key_value(name, value, _value_type(value))
            continue
        sub_type = field.types[1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    for name, value in metadata.items():  # keys the file did not have
        writer.add_key_value(name, value, _value_type(value))
    for t in reader.tensors:
        if t.name in tensors:
            replacement = tensors[t.name]
            if replacement is not None:
                writer.add_tensor(t.name, np.asarray(replacement, np.float32))
            continue
        writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)  # rows of bytes for quantized types
    names = {t.name for t in reader.tensors}
    for name, values in tensors.items():
        if name not in names and values is not None:
            writer.add_tensor(name, np.asarray(values, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(dst)
