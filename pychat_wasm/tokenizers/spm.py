"""SentencePiece-style tokenizer (`tokenizer.ggml.model = llama`): Llama 1/2, Mistral, Gemma.

How llama.cpp's `llm_tokenizer_spm` turns plain text into ids, and so do we:
1. Spaces become "▁" (U+2581). With `add_space_prefix`, text at the start or right after a special
   token gets one "▁" in front ("Hi" -> "▁Hi"); Gemma 3 turns this off.
2. Start from single characters and keep merging the adjacent pair whose joined text is a token with
   the highest score (ties: the leftmost pair). There is no pre-splitting into words.
3. A character no token covers becomes its UTF-8 bytes, each the byte token "<0xNN>" (byte fallback),
   so an emoji missing from the vocabulary is e.g. <0xF0><0x9F><0x99><0x82>.

Decoding undoes it: "▁" becomes " " and byte tokens give back their byte.
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..errors import TokenizerError
from .base import BYTE, SPACE, Tokenizer, byte_token_value, read_number_list
from .merge import merge_adjacent


def spm_merge(text: str, token_ids: Dict[str, int], scores: List[float]) -> List[str]:
    """Split `text` into pieces by repeatedly joining the best-scoring adjacent pair that is a token.

    >>> spm_merge("abc", {"ab": 0, "bc": 1, "abc": 2}, [-2.0, -1.0, -3.0])
    ['abc']
    >>> spm_merge("abc", {"ab": 0, "bc": 1}, [-2.0, -1.0])
    ['a', 'bc']
    """
    def priority(left: str, right: str):
        token_id = token_ids.get(left + right)
        return None if token_id is None else -scores[token_id]

    return merge_adjacent(list(text), priority)


class SPMTokenizer(Tokenizer):
    """SentencePiece vocabulary with scores and byte fallback, as llama.cpp runs it."""

    kind = "spm"

    def __init__(self, metadata: Dict[str, Any]):
        super().__init__(metadata, pre="default", add_bos_default=True)
        self.add_space_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
        self.scores: List[float] = read_number_list(metadata, "tokenizer.ggml.scores", self.vocab_size, default=0.0)
        byte_tokens = [i for i, kind in enumerate(self.token_types) if kind == BYTE]
        self.byte_ids: Dict[int, int] = {byte_token_value(self.tokens[i]): i for i in byte_tokens}  # byte -> id
        self.byte_ids.pop(None, None)  # type: ignore[call-overload]

    def _encode_text(self, text: str, after_special: bool) -> List[int]:
        if self.add_space_prefix and after_special:
            text = " " + text
        ids: List[int] = []
        for piece in spm_merge(text.replace(" ", SPACE), self.token_ids, self.scores):
            token_id = self.token_ids.get(piece)
            if token_id is not None:
                ids.append(token_id)
            else:
                ids.extend(self._byte_id(b) for b in piece.encode("utf-8"))
        return ids

    def _byte_id(self, byte: int) -> int:
        token_id = self.byte_ids.get(byte, self.unk_id)
        if token_id is None:
            raise TokenizerError("no byte token <0x%02X> and no unknown token to stand in for it" % byte)
        return token_id

    def _normal_token_bytes(self, text: str) -> bytes:
        return text.replace(SPACE, " ").encode("utf-8")
