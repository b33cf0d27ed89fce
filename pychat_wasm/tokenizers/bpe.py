"""Byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`): GPT-2, Llama 3, Qwen 2, SmolLM; and Gemma 4's BPE.

How llama.cpp's `llm_tokenizer_bpe` turns plain text into ids, and so do we:
1. Pre-tokenize: the regexes `tokenizer.ggml.pre` names (see `pretokenizers`) cut the text into words
   (" world", "123", "\\n").
2. Spell each word's UTF-8 bytes in GPT-2's printable byte alphabet (space -> "Ġ", newline -> "Ċ").
   Gemma 4 (`tokenizer.ggml.model = gemma4`) instead keeps the text and writes spaces as "▁".
3. Merge: repeatedly join the adjacent pair with the lowest merge rank (the leftmost if tied), with a
   priority queue (merge.py).
   A piece the merges leave outside the vocabulary becomes its byte tokens.
   Words repeat a lot, so the ids of each word are cached.
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..errors import TokenizerError
from .pretokenizers import resolve_pre_tokenizer, split_pre_tokens
from .base import SPACE, Tokenizer
from .merge import merge_adjacent
from .unicode_regex import compile_unicode_regex


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte alphabet: printable bytes stand for themselves, the rest move to U+0100 onwards.

    >>> b2u = bytes_to_unicode(); b2u[ord("A")], b2u[ord(" ")], b2u[ord("\\n")]
    ('A', 'Ġ', 'Ċ')
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    spelling = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in spelling:
            spelling[b] = chr(256 + extra)
            extra += 1
    return spelling


_SPELL = bytes_to_unicode()  # as a str.translate table it spells latin-1-decoded bytes
_UNSPELL = {ord(c): b for b, c in _SPELL.items()}  # back from the alphabet to byte values


def spell_bytes(word: str) -> str:
    """A word's UTF-8 bytes in the byte alphabet.

    >>> spell_bytes(" héllo\\n")
    'ĠhÃ©lloĊ'
    """
    return word.encode("utf-8").decode("latin-1").translate(_SPELL)


def unspell_bytes(spelled: str) -> bytes:
    """The bytes a byte-alphabet string stands for (characters outside the alphabet: their UTF-8).

    >>> unspell_bytes("ĠhÃ©lloĊ").decode()
    ' héllo\\n'
    """
    raw = spelled.translate(_UNSPELL)
    try:
        return raw.encode("latin-1")
    except UnicodeEncodeError:
        return b"".join(c.encode("latin-1") if ord(c) < 256 else c.encode("utf-8") for c in raw)


def bpe_merge(word: str, ranks: Dict[str, int]) -> List[str]:
    """Join adjacent symbols of `word`, lowest merge rank first (ties: leftmost); `ranks` maps "left right"
    to its rank. O(n log n) in the length of the word (merge.py).

    >>> bpe_merge("hello", {"l l": 0, "h e": 1, "ll o": 2, "he llo": 3})
    ['hello']
    >>> bpe_merge("aaa", {"a a": 0})
    ['aa', 'a']
    """
    return merge_adjacent(list(word), lambda left, right: ranks.get(left + " " + right))


class BPETokenizer(Tokenizer):
    """BPE vocabulary with merge ranks and a named pre-tokenizer, as llama.cpp runs it."""

    kind = "bpe"
    CACHE_LIMIT = 50_000  # words; cleared when full

    def __init__(self, metadata: Dict[str, Any]):
        name, pre = resolve_pre_tokenizer(metadata.get("tokenizer.ggml.pre"))
        super().__init__(metadata, pre=name, add_bos_default=pre.add_bos)
        self.pre_tokenizer = pre
        self.patterns = [compile_unicode_regex(p) for p in pre.splits]
        merges = metadata.get("tokenizer.ggml.merges")
        if not isinstance(merges, list) or (merges and not isinstance(merges[0], str)):
            raise TokenizerError("tokenizer.ggml.merges is missing or not a list of strings: a gpt2 (BPE) "
                                 "tokenizer needs its merges")
        self.merge_ranks: Dict[str, int] = dict(zip(merges, range(len(merges))))
        self.cache: Dict[str, List[int]] = {}

    def _encode_text(self, text: str, after_special: bool) -> List[int]:
        ids: List[int] = []
        for word in split_pre_tokens(text, self.patterns):
            cached = self.cache.get(word)
            if cached is None:
                cached = self._encode_word(self._spell(word))
                if len(self.cache) >= self.CACHE_LIMIT:
                    self.cache.clear()
                self.cache[word] = cached
            ids.extend(cached)
        return ids

    def _spell(self, word: str) -> str:
        return spell_bytes(word) if self.pre_tokenizer.byte_level else word.replace(" ", SPACE)

    def _encode_word(self, spelled: str) -> List[int]:
        whole_newlines = not self.pre_tokenizer.byte_level and not spelled.strip("\n")  # Gemma 4: "\n\n\n"
        if (self.pre_tokenizer.ignore_merges or whole_newlines) and spelled in self.token_ids:
            return [self.token_ids[spelled]]
        ids: List[int] = []
        for part in bpe_merge(spelled, self.merge_ranks):
            token_id = self.token_ids.get(part)
            if token_id is not None:
                ids.append(token_id)
            else:  # merges that lead outside the vocabulary: fall back to its single byte tokens
                ids.extend(i for i in map(self.token_ids.get, self._byte_token_texts(part)) if i is not None)
        return ids

    def _byte_token_texts(self, part: str) -> List[str]:
        if self.pre_tokenizer.byte_level:
            return list(part)  # each character of the byte alphabet is one byte's token
        return ["<0x%02X>" % b for b in part.encode("utf-8")]

    def _normal_token_bytes(self, text: str) -> bytes:
        if self.pre_tokenizer.byte_level:
            return unspell_bytes(text)
        return text.replace(SPACE, " ").encode("utf-8")
