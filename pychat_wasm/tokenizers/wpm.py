"""WordPiece tokenizer (`tokenizer.ggml.model = bert`): BERT and the embedding models built on it (bge, ...).

How llama.cpp's `llm_tokenizer_wpm` turns plain text into ids, and so do we:
1. Normalize as BERT does (`tokenizer.ggml.normalizer.lowercase`, `...strip_accents`, both on unless the
   metadata says otherwise): with accents stripped, each character becomes the first character of its NFD
   decomposition and combining marks are dropped ("Äpfel" -> "Apfel"). Control and format characters,
   private use, NUL and U+FFFD are dropped too; letters are lower-cased.
2. Cut into words at white space; each punctuation mark, ASCII symbol and CJK ideograph is a word of its own.
3. Match each word, with "▁" in front, greedily: the longest token at each position. llama.cpp's GGUF
   files mark the start of a word with "▁" where BERT's vocabulary marks continuations with "##". A word
   with a position no token covers becomes the unknown token as a whole.
With `add_special`, the ids are framed by the classifier token ([CLS]) and the separator ([SEP]).

    >>> words_of("Héllo, WORLD!  数学\\x00", strip_accents=True, lowercase=True)
    ['hello', ',', 'world', '!', '数', '学']
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..errors import TokenizerError
from .base import SPACE, Tokenizer
from .unicode_classes import LOWERCASE_RUNS, NFD_FIRST_RANGES
from .unicode_regex import compile_unicode_regex

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f" \
       r"\U0002b920-\U0002ceaf\U0002f800-\U0002fa1f"  # llama.cpp's (and HF's) "Chinese characters"
_ALONE = r"\p{P}\$\+<=>\^`\|~" + _CJK  # punctuation, ASCII symbols, CJK: one-character words
WORD = compile_unicode_regex(r"[%s]|[^\s%s]+" % (_ALONE, _ALONE))
DROPPED = compile_unicode_regex(r"(?![\s])[\x00\ufffd\p{Cc}\p{Cf}\p{Co}\p{Cs}]")  # white space is kept
DROPPED_WITH_MARKS = compile_unicode_regex(r"(?![\s])[\x00\ufffd\p{Cc}\p{Cf}\p{Co}\p{Cs}\p{M}]")

_maps: Dict[str, Dict[int, int]] = {}


def _character_maps() -> Dict[str, Dict[int, int]]:
    """str.translate tables for lower-casing and for "first character of the NFD", built on first use."""
    if not _maps:
        _maps["lower"] = {c: c + delta for first, last, step, delta in LOWERCASE_RUNS
                          for c in range(first, last + 1, step)}
        _maps["nfd_first"] = {c: base for first, last, base in NFD_FIRST_RANGES for c in range(first, last + 1)}
    return _maps


def words_of(text: str, strip_accents: bool, lowercase: bool) -> List[str]:
    """BERT's normalization and word split (steps 1 and 2 above)."""
    maps = _character_maps()
    if strip_accents:
        text = text.translate(maps["nfd_first"])
    text = (DROPPED_WITH_MARKS if strip_accents else DROPPED).sub("", text)
    words = WORD.findall(text)
    return [w.translate(maps["lower"]) for w in words] if lowercase else words


class WPMTokenizer(Tokenizer):
    """WordPiece vocabulary with "▁" word starts and BERT's normalizer, as llama.cpp runs it."""

    kind = "wpm"

    def __init__(self, metadata: Dict[str, Any]):
        super().__init__(metadata, pre="default")
        self.lowercase = bool(metadata.get("tokenizer.ggml.normalizer.lowercase", True))
        self.strip_accents = bool(metadata.get("tokenizer.ggml.normalizer.strip_accents", self.lowercase))
        self.cls_id: Optional[int] = self.bos_id if self.bos_id is not None else self._token_id(metadata,
                                                                                                "cls_token_id")
        self.sep_id = self._token_id(metadata, "seperator_token_id")  # llama.cpp's spelling of the key
        if self.unk_id is None:
            raise TokenizerError("tokenizer.ggml.unknown_token_id is not set: a bert (WordPiece) tokenizer needs "
                                 "the unknown token for words its vocabulary cannot spell")
        self.max_token_length = max(len(t) for t in self.tokens)

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> List[int]:
        ids = super().encode(text, add_special=False, parse_special=parse_special)
        if not add_special:
            return ids
        if self.cls_id is None or self.sep_id is None:
            raise TokenizerError("add_special needs tokenizer.ggml.cls_token_id (or bos_token_id) and "
                                 "tokenizer.ggml.seperator_token_id; this GGUF lacks one")
        return [self.cls_id] + ids + [self.sep_id]

    def _encode_text(self, text: str, after_special: bool) -> List[int]:
        ids: List[int] = []
        for word in words_of(text, self.strip_accents, self.lowercase):
            ids.extend(self._encode_word(SPACE + word))
        return ids

    def _encode_word(self, word: str) -> List[int]:
        ids: List[int] = []
        start = 0
        while start < len(word):
            for end in range(min(len(word), start + self.max_token_length), start, -1):  # longest first
                token_id = self.token_ids.get(word[start:end])
                if token_id is not None:
                    ids.append(token_id)
                    start = end
                    break
            else:
                return [self.unk_id]  # type: ignore[list-item]
        return ids

    def _normal_token_bytes(self, text: str) -> bytes:
        return text.replace(SPACE, " ").encode("utf-8")
