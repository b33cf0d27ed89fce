"""Byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`): GPT-2, Llama 3, Qwen 2, SmolLM.

How llama.cpp's `llm_tokenizer_bpe` turns plain text into ids, and so do we:
1. Pre-tokenize: regexes named by `tokenizer.ggml.pre` cut the text into words (" world", "123", "\\n").
   Some names use several regexes in turn; each one re-cuts the pieces the previous one left, and text
   between its matches stays a piece of its own.
2. Spell each word's UTF-8 bytes in GPT-2's printable byte alphabet (space -> "Ġ", newline -> "Ċ").
3. Merge: repeatedly join the adjacent pair with the lowest merge rank (the leftmost if tied).
   Words repeat a lot, so the ids of each word are cached.

Pre-tokenizer names we know (llama.cpp's list, by regex):
    gpt-2 (and phi-2, mpt, olmo, jais, ...) : GPT-2's regex
    llama3 / llama-bpe / llama-v3 / ...     : Llama 3's regex (numbers in groups of 1-3), whole-word tokens
                                              bypass the merges, BOS added by default
    qwen2 / stablelm2 / deepseek-r1-qwen    : Llama 3's regex with single digits
    smollm / starcoder / refact / ...       : single digits, then GPT-2's regex
    default                                 : llama.cpp's default: punctuation runs, then GPT-2's regex,
                                              then digit runs, then groups of 3 digits
A missing or unknown name falls back to FALLBACK_PRE ("gpt-2", the regex byte-level BPE started with and
what transformers applies to names it does not know) with a warning.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, NamedTuple, Tuple

from .errors import TokenizerError
from .tokenizer import Tokenizer
from .unicode_regex import compile_unicode_regex

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_SPLITS = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]")


class PreTokenizer(NamedTuple):
    splits: Tuple[str, ...]  # regexes applied in turn
    ignore_merges: bool = False  # a word that is itself a token skips the merges (llama.cpp, Llama 3)
    add_bos: bool = False  # llama.cpp's default for `add_bos_token` when the metadata has none


_GPT2 = PreTokenizer((GPT2_SPLIT,))
_LLAMA3 = PreTokenizer((LLAMA3_SPLIT,), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer((QWEN2_SPLIT,))
_DIGITS_THEN_GPT2 = PreTokenizer((r"\p{N}", GPT2_SPLIT))

PRE_TOKENIZERS: Dict[str, PreTokenizer] = {
    "default": PreTokenizer(DEFAULT_SPLITS),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                     "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4", "roberta-bpe",
                     "jina-v1-en", "jina-v2-code", "trillion", "granite-docling"), _GPT2),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano"), _LLAMA3),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((LLAMA3_SPLIT,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
                     "solar-open"), _QWEN2),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b",
                     "mellum2"), _DIGITS_THEN_GPT2),
}
FALLBACK_PRE = "gpt-2"


def resolve_pre_tokenizer(name: Any) -> Tuple[str, PreTokenizer]:
    """The pre-tokenizer for a `tokenizer.ggml.pre` name; unknown or missing names warn and fall back.

    >>> resolve_pre_tokenizer("llama-bpe")[1].ignore_merges
    True
    """
    if name in PRE_TOKENIZERS:
        return name, PRE_TOKENIZERS[name]
    warnings.warn("unknown pre-tokenizer tokenizer.ggml.pre = %r; using %r (known: %s)"
                  % (name, FALLBACK_PRE, ", ".join(sorted(PRE_TOKENIZERS))), stacklevel=3)
    return FALLBACK_PRE, PRE_TOKENIZERS[FALLBACK_PRE]


def split_pre_tokens(text: str, patterns: List[Any]) -> List[str]:
    """Cut `text` with each compiled regex in turn; text between matches stays a piece of its own.

    >>> split_pre_tokens("Hello world123!", [compile_unicode_regex(GPT2_SPLIT)])
    ['Hello', ' world', '123', '!']
    >>> split_pre_tokens(" 42", [compile_unicode_regex(r"\\p{N}"), compile_unicode_regex(GPT2_SPLIT)])
    [' ', '4', '2']
    """
    pieces = [text] if text else []
    for pattern in patterns:
        cut: List[str] = []
        for piece in pieces:
            done = 0
            for m in pattern.finditer(piece):
                start, end = m.span()
                if start == end:
                    continue
                if start > done:
                    cut.append(piece[done:start])
                cut.append(piece[start:end])
                done = end
            if done < len(piece):
                cut.append(piece[done:])
        pieces = cut
    return pieces


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
    """Join adjacent symbols of `word`, lowest merge rank first; `ranks` maps "left right" to its rank.

    >>> bpe_merge("hello", {"l l": 0, "h e": 1, "ll o": 2, "he llo": 3})
    ['hello']
    >>> bpe_merge("aaa", {"a a": 0})
    ['aa', 'a']
    """
    parts = list(word)
    while len(parts) > 1:
        best_rank, left, right = None, "", ""
        for a, b in zip(parts, parts[1:]):
            rank = ranks.get(a + " " + b)
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, left, right = rank, a, b
        if best_rank is None:
            break
        merged: List[str] = []
        i = 0
        while i < len(parts):  # join every occurrence, left to right
            if i + 1 < len(parts) and parts[i] == left and parts[i + 1] == right:
                merged.append(left + right)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


class BPETokenizer(Tokenizer):
    """Byte-level BPE vocabulary with merge ranks and a named pre-tokenizer, as llama.cpp runs it."""

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
                cached = self._encode_word(spell_bytes(word))
                if len(self.cache) >= self.CACHE_LIMIT:
                    self.cache.clear()
                self.cache[word] = cached
            ids.extend(cached)
        return ids

    def _encode_word(self, spelled: str) -> List[int]:
        if self.pre_tokenizer.ignore_merges and spelled in self.token_ids:
            return [self.token_ids[spelled]]
        ids: List[int] = []
        for part in bpe_merge(spelled, self.merge_ranks):
            token_id = self.token_ids.get(part)
            if token_id is not None:
                ids.append(token_id)
            else:  # merges that lead outside the vocabulary: fall back to its single byte tokens
                ids.extend(self.token_ids[c] for c in part if c in self.token_ids)
        return ids

    def _normal_token_bytes(self, text: str) -> bytes:
        return unspell_bytes(text)
