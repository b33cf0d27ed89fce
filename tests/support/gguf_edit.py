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
from gguf import GGUFReader, GGUFValueType

from gguf_files import GGUFValue, write_gguf


def rewrite_gguf(src: Path, dst: Path, metadata: Optional[Dict[str, Any]] = None,
                 tensors: Optional[Dict[str, Optional[np.ndarray]]] = None) -> Path:
    metadata, tensors = dict(metadata or {}), tensors or {}
    reader = GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    kept: Dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name in metadata:
            kept[name] = metadata.pop(name)
            continue
        sub_type = field.types[1] if field.types[0] == GGUFValueType.ARRAY else None
        kept[name] = GGUFValue(field.contents(), field.types[0], sub_type)
    kept.update(metadata)  # keys the file did not have
    written = []
    for t in reader.tensors:
        if t.name not in tensors:
            written.append((t.name, np.array(t.data), t.tensor_type))  # rows of bytes for quantized types
        elif tensors[t.name] is not None:
            written.append((t.name, np.asarray(tensors[t.name], np.float32)))
    names = {t.name for t in reader.tensors}
    written += [(name, np.asarray(values, np.float32)) for name, values in tensors.items()
                if name not in names and values is not None]
    return write_gguf(dst, arch, {name: value for name, value in kept.items() if value is not None}, written)
