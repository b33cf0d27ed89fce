"""Tokenizers read from GGUF metadata: `load_tokenizer` picks the one a file describes.

    base.py           the shared base: special tokens, byte handling, streaming decode
    spm.py            SentencePiece (tokenizer.ggml.model = "llama")
    bpe.py            byte-level BPE ("gpt2") and BPE on "▁" text ("gemma4"), pretokenizers.py by name
    wpm.py            WordPiece ("bert")
    unicode_regex.py  `regex`-syntax patterns for the standard `re`, over unicode_classes.py's ranges
"""
from __future__ import annotations

from typing import Any

from ..errors import TokenizerError
from ..gguf.reader import GGUFFile
from .base import Tokenizer

SUPPORTED_MODELS = ("llama", "gpt2", "gemma4", "bert")


def load_tokenizer(gguf_file: Any) -> Tokenizer:
    """The tokenizer a GGUF file describes; `gguf_file` is a GGUFFile, a path, or a metadata dict. Each kind's
    module is imported when a file needs it: their regexes compile at import, which a browser start pays for."""
    if isinstance(gguf_file, dict):
        metadata = gguf_file
    elif hasattr(gguf_file, "metadata"):
        metadata = gguf_file.metadata
    else:
        metadata = GGUFFile.open(str(gguf_file)).metadata
    model = metadata.get("tokenizer.ggml.model")
    if model == "llama":
        from .spm import SPMTokenizer
        return SPMTokenizer(metadata)
    if model == "gpt2":
        from .bpe import BPETokenizer
        return BPETokenizer(metadata)
    if model == "bert":
        from .wpm import WPMTokenizer
        return WPMTokenizer(metadata)
    if model == "gemma4":  # llama.cpp names the pre-tokenizer after the model, whatever the metadata says
        from .bpe import BPETokenizer
        return BPETokenizer(dict(metadata, **{"tokenizer.ggml.pre": "gemma4"}))
    raise TokenizerError("unsupported tokenizer model tokenizer.ggml.model = %r; supported: %s"
                         % (model, ", ".join(SUPPORTED_MODELS)))
