"""The one way tests write a GGUF file: gguf-py's GGUFWriter (independent of ours), fed a spec.

    >>> write_gguf(tmp_path / "m.gguf", "llama",                                        # doctest: +SKIP
    ...            {"context_length": 64, "general.name": "tiny", "test.u8": GGUFValue(200, GGUFValueType.UINT8)},
    ...            [("output_norm.weight", np.ones(32, np.float32)),
    ...             ("token_embd.weight", quantize(rows, Q8_0), Q8_0)])

metadata, in file order:
- a name without a dot is one of gguf-py's `add_<name>` helpers, which knows the key for the architecture
  and its value type: "context_length", "token_list", "bos_token_id", "chat_template", "custom_alignment" ...
- a dotted key is written as it is: a GGUFValue with its type (and an array's element type), or a plain
  value typed by `value_type` (str, bool, float32, (u)int32 / (u)int64, an array typed by its elements).
tensors, in file order: (name, array) stored with the array's own dtype (float32, float16 ...), or
(name, rows of bytes, ggml type) for a quantized type.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Tuple

import numpy as np
from gguf import GGUFValueType, GGUFWriter
from gguf.gguf_writer import GGUFValue

__all__ = ["GGUFValue", "GGUFValueType", "value_type", "write_gguf"]

_PLAIN_TYPES = {str: GGUFValueType.STRING, bool: GGUFValueType.BOOL, float: GGUFValueType.FLOAT32,
                list: GGUFValueType.ARRAY}


def value_type(value: Any) -> GGUFValueType:
    """The GGUF type a plain value is written as: value_type(7) -> UINT32, value_type(2 ** 40) -> UINT64."""
    if type(value) is int and value < 0:
        return GGUFValueType.INT32 if value >= -2 ** 31 else GGUFValueType.INT64
    if type(value) is int:
        return GGUFValueType.UINT32 if value < 2 ** 32 else GGUFValueType.UINT64
    return _PLAIN_TYPES[type(value)]


def write_gguf(path: Path, arch: str, metadata: Optional[Mapping[str, Any]] = None,
               tensors: Iterable[Tuple] = ()) -> Path:
    """Write a GGUF file of `arch` with `metadata` and `tensors` (see the module's docstring) to `path`."""
    writer = GGUFWriter(str(path), arch)
    for name, value in (metadata or {}).items():
        if "." not in name:
            getattr(writer, "add_" + name)(value)
        elif isinstance(value, GGUFValue):
            writer.add_key_value(name, value.value, value.type, sub_type=value.sub_type)
        else:
            writer.add_key_value(name, value, value_type(value))
    for name, array, *ggml_type in tensors:
        writer.add_tensor(name, np.asarray(array), raw_dtype=ggml_type[0] if ggml_type else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
