"""Train a byte-level BPE tokenizer (GPT-2's kind) on a corpus, for a model trained from scratch.

The idea of karpathy's minbpe (`regex.py`), with the bookkeeping of HF tokenizers' BpeTrainer so that
each merge only revisits the words that hold its pair:
1. Cut each text at the special tokens written in it (they never take part in merges), then into words
   with GPT-2's regex: the one the "gpt-2" pre-tokenizer cuts text with at inference.
2. Spell each word's UTF-8 bytes in GPT-2's byte alphabet and count how often every word occurs.
3. Repeatedly merge the most frequent adjacent pair of symbols into a new token, until the vocabulary
   is full or no pair occurs `min_frequency` times. Ties go to the pair of smaller token ids, so the
   same corpus always gives the same vocabulary. A heap holds the pair counts; a merge updates the
   counts of the words it changes only.

The vocabulary: the special tokens (control), the 256 byte tokens in GPT-2's order, then one token
per merge. Special tokens, byte alphabet, ids and tie rule are those of HF tokenizers' BpeTrainer
given the special tokens and `ByteLevel.alphabet()` as its initial alphabet.

    >>> from pychat_wasm.tokenizers.bpe import BPETokenizer
    >>> vocab = train_bpe(["low lower lowest"] * 3, vocab_size=len(SPECIAL_TOKENS) + 256 + 3)
    >>> vocab.merges
    ['l o', 'lo w', 'Ġ low']
    >>> tok = BPETokenizer(gguf_tokenizer_metadata(vocab))
    >>> [tok.token_text(i) for i in tok.encode("lowest<|im_end|>")]
    ['low', 'e', 's', 't', '<|im_end|>']
"""
from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from typing import Any, Dict, Iterable, List, NamedTuple, Sequence, Set, Tuple

from ..errors import TrainingDataError
from ..tokenizers.base import CONTROL, NORMAL
from ..tokenizers.pretokenizers import GPT2_SPLIT, split_pre_tokens
from ..tokenizers.bpe import bytes_to_unicode, spell_bytes
from ..tokenizers.unicode_regex import compile_unicode_regex

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2, as in SmolLM2
BYTE_TOKENS = sorted(bytes_to_unicode().values())  # GPT-2's order: "!".."~", then the rest
PRE_TOKENIZER = "gpt-2"
_GPT2_PATTERN = compile_unicode_regex(GPT2_SPLIT)

Pair = Tuple[int, int]


class BPEVocabulary(NamedTuple):
    tokens: List[str]  # special tokens as written, the others in the byte alphabet
    token_types: List[int]  # tokenizer.ggml.token_type values: CONTROL or NORMAL
    merges: List[str]  # "left right", best first


def count_words(texts: Iterable[str], special_tokens: Sequence[str] = SPECIAL_TOKENS) -> Dict[str, int]:
    """How often each pre-tokenized word occurs, spelled in the byte alphabet; special tokens left out.

    >>> count_words(["Hi hi<|im_end|>hi!"])
    {'Hi': 1, 'Ġhi': 1, 'hi': 1, '!': 1}
    """
    by_length = sorted(special_tokens, key=len, reverse=True)  # the longest of two that could match
    specials = re.compile("|".join(re.escape(t) for t in by_length)) if by_length else None
    counts: Counter = Counter()
    for text in texts:
        for piece in specials.split(text) if specials else [text]:
            counts.update(split_pre_tokens(piece, [_GPT2_PATTERN]))
    return {spell_bytes(word): n for word, n in counts.items()}


def merge_pair(word: List[int], pair: Pair, merged_id: int) -> List[int]:
    """`word` with every occurrence of `pair` replaced by `merged_id`, left to right.

    >>> merge_pair([5, 5, 5, 7], (5, 5), 9)
    [9, 5, 7]
    """
    left, right = pair
    out: List[int] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            out.append(merged_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = SPECIAL_TOKENS,
              min_frequency: int = 2) -> BPEVocabulary:
    """Learn merges from `texts` until there are `vocab_size` tokens or no pair occurs `min_frequency` times."""
    tokens = list(special_tokens) + BYTE_TOKENS
    if len(set(tokens)) != len(tokens):
        raise TrainingDataError("special tokens must be distinct and differ from the 256 byte tokens: %r"
                                % (special_tokens,))
    if vocab_size < len(tokens):
        raise TrainingDataError("vocab_size %d is too small: the %d special tokens and 256 byte tokens need %d"
                                % (vocab_size, len(special_tokens), len(tokens)))
    word_counts = count_words(texts, special_tokens)
    if not word_counts:
        raise TrainingDataError("the corpus holds no text to train a tokenizer on (only empty texts or "
                                "special tokens)")
    byte_ids = {t: i for i, t in enumerate(tokens) if i >= len(special_tokens)}
    words = [[byte_ids[c] for c in word] for word in word_counts]
    freqs = list(word_counts.values())
    pair_counts: Dict[Pair, int] = defaultdict(int)
    words_with_pair: Dict[Pair, Set[int]] = defaultdict(set)  # may also hold words the pair has left
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[w]
            words_with_pair[pair].add(w)
    # Entries are (-count, pair), pushed when the pair first occurs. Counts only fall after that (a merge
    # takes pairs away and makes new ones, with the new token), so a stale entry is re-pushed when popped.
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    merges: List[str] = []
    while heap and len(tokens) < vocab_size:
        negative_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative_count:
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < min_frequency:
            break
        left, right = tokens[pair[0]], tokens[pair[1]]
        merges.append(left + " " + right)
        merged_id = len(tokens)
        tokens.append(left + right)
        for new_pair in _apply_merge(words, freqs, pair, merged_id, pair_counts, words_with_pair):
            heapq.heappush(heap, (-pair_counts[new_pair], new_pair))
    types = [CONTROL] * len(special_tokens) + [NORMAL] * (len(tokens) - len(special_tokens))
    return BPEVocabulary(tokens, types, merges)


def _apply_merge(words: List[List[int]], freqs: List[int], pair: Pair, merged_id: int,
                 pair_counts: Dict[Pair, int], words_with_pair: Dict[Pair, Set[int]]) -> Set[Pair]:
    """Merge `pair` in every word holding it and recount those words' pairs; returns the new pairs (the ones
    with the merged token: all other neighbours stay as they were)."""
    new_pairs: Set[Pair] = set()
    for w in words_with_pair.pop(pair):
        word = words[w]
        merged = merge_pair(word, pair, merged_id)
        if len(merged) == len(word):
            continue
        for old in zip(word, word[1:]):
            pair_counts[old] -= freqs[w]
        for new in zip(merged, merged[1:]):
            pair_counts[new] += freqs[w]
            if merged_id in new:
                words_with_pair[new].add(w)
                new_pairs.add(new)
        words[w] = merged
    del pair_counts[pair]  # every occurrence is merged now
    return new_pairs


def gguf_tokenizer_metadata(vocab: BPEVocabulary, bos_token: str = "<|im_start|>",
                            eos_token: str = "<|im_end|>") -> Dict[str, Any]:
    """The `tokenizer.ggml.*` metadata of `vocab`, as a GGUF file carries it and BPETokenizer reads it.

    BOS and EOS are ChatML's turn markers (as in SmolLM2), EOS pads; byte-level BPE has no unknown token.
    """
    controls = {t: i for i, (t, kind) in enumerate(zip(vocab.tokens, vocab.token_types)) if kind == CONTROL}
    for text in (bos_token, eos_token):
        if text not in controls:
            raise TrainingDataError("%r is not a special token of this vocabulary (it has %s)"
                                    % (text, ", ".join(controls) or "none"))
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": PRE_TOKENIZER,
        "tokenizer.ggml.tokens": list(vocab.tokens),
        "tokenizer.ggml.token_type": list(vocab.token_types),
        "tokenizer.ggml.merges": list(vocab.merges),
        "tokenizer.ggml.bos_token_id": controls[bos_token],
        "tokenizer.ggml.eos_token_id": controls[eos_token],
        "tokenizer.ggml.padding_token_id": controls[eos_token],
        "tokenizer.ggml.add_bos_token": False,
    }
