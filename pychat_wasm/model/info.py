"""A summary of a model file, read from its header only: what `pychat-wasm info` prints and the web page shows.

    >>> model_info(GGUFFile.open("SmolLM2-135M-Instruct.Q4_1.gguf"))["architecture"]   # doctest: +SKIP
    'llama'
"""
from __future__ import annotations

from typing import Any, Dict

from ..gguf.reader import GGUFFile
from .config import HYPERPARAMETERS


def model_info(gguf: GGUFFile) -> Dict[str, Any]:
    """Name, architecture, sizes, tensor types, hyperparameters and tokenizer of a model file, as plain data."""
    meta = gguf.metadata
    n_params = sum(t.n_elements for t in gguf.tensors.values())
    tensor_bytes = sum(t.nbytes for t in gguf.tensors.values())
    hyper = {h.key: gguf.arch_value(h.key) for h in HYPERPARAMETERS if gguf.arch_value(h.key) is not None}
    tokens = meta.get("tokenizer.ggml.tokens")
    return {
        "name": meta.get("general.name"),
        "architecture": meta.get("general.architecture"),
        "gguf_version": gguf.version,
        "file_bytes": gguf.size,
        "tensor_count": len(gguf.tensors),
        "parameters": n_params,
        "tensor_bytes": tensor_bytes,
        "bits_per_weight": round(8.0 * tensor_bytes / n_params, 2) if n_params else None,
        "tensor_types": gguf.type_histogram(),
        "hyperparameters": hyper,
        "tokenizer": meta.get("tokenizer.ggml.model"),
        "pre_tokenizer": meta.get("tokenizer.ggml.pre"),
        "vocab_size": len(tokens) if isinstance(tokens, list) else None,
        "chat_template": bool(meta.get("tokenizer.chat_template")),
    }
