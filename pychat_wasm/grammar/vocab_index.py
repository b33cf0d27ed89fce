"""A tokenizer's vocabulary arranged for grammar masking: a trie of token texts, built once per tokenizer.

Masking asks, for every token, whether the grammar can read its text from the current state. Walking a
trie of the texts shares the work of common prefixes ("Ġthe", "Ġthere", "Ġtheir" read "Ġthe" once), and
with the matcher's memoized `step` most of the walk is dictionary look-ups. This replaces llama.cpp's
llama_grammar_reject_candidates, which filters the candidate list stack by stack.

A subtree holding many tokens also keeps the set of characters below it and all its ids: where every one
of those characters leaves the parse state as it is (inside a JSON string, all but `"` and `\\` do), the
whole subtree is allowed without walking it.

Tokens fall into four groups:
- whole: their bytes are complete UTF-8 text -> in the trie, as code points;
- ragged: their bytes start or end inside a character (byte tokens, split emoji) -> checked one by one;
- end of generation (EOS/EOT) -> allowed only where the grammar may end;
- other special tokens and tokens without bytes -> never allowed, unless the grammar names their id (<[id]>).
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, List, Tuple

from .matcher import decode_utf8

# [children by code point, ids of the tokens that end here, characters below (None for a small subtree),
#  ids of every token in the subtree (None for a small subtree)]
TrieNode = List[Any]
SUMMARY_MIN_TOKENS = 24  # subtrees with at least this many tokens keep their characters and ids


class VocabIndex:
    """The trie and token groups of one tokenizer; get it with `vocab_index(tokenizer)` to share it."""

    def __init__(self, tokenizer: Any):
        self.vocab_size: int = tokenizer.vocab_size
        self.end_ids = sorted(set(tokenizer.end_of_turn_ids) | ({tokenizer.eos_id} - {None}))
        self.token_bytes: List[bytes] = []
        self.trie: TrieNode = [{}, [], None, None]
        self.ragged: List[int] = []
        self.textual: List[int] = []   # every id that has text and is not special: what !<[id]> may match
        ends = set(self.end_ids)
        for token_id in range(self.vocab_size):
            raw = tokenizer.token_bytes(token_id)
            self.token_bytes.append(raw)
            if token_id in ends or tokenizer.is_special(token_id) or not raw:
                continue
            self.textual.append(token_id)
            points, partial = decode_utf8(raw, None)
            if points and partial is None:
                node = self.trie
                for point in points:
                    node = node[0].setdefault(point, [{}, [], None, None])
                node[1].append(token_id)
            else:
                self.ragged.append(token_id)
        self.textual_set = frozenset(self.textual)
        summarize(self.trie)


def summarize(root: TrieNode) -> None:
    """Fill in the characters and ids below each large subtree (children before parents, without recursion)."""
    order, todo = [], [root]
    while todo:
        node = todo.pop()
        order.append(node)
        todo.extend(node[0].values())
    sizes: Dict[int, int] = {}
    for node in reversed(order):
        size = len(node[1]) + sum(sizes[id(child)] for child in node[0].values())
        sizes[id(node)] = size
        if size >= SUMMARY_MIN_TOKENS and node[0]:
            chars, ids = set(node[0]), list(node[1])
            for child in node[0].values():
                chars.update(child[2] if child[2] is not None else subtree_chars(child))
                ids.extend(child[3] if child[3] is not None else subtree_ids(child))
            node[2], node[3] = frozenset(chars), ids


def subtree_chars(node: TrieNode) -> set:
    chars, todo = set(), [node]
    while todo:
        here = todo.pop()
        chars.update(here[0])
        todo.extend(here[0].values())
    return chars


def subtree_ids(node: TrieNode) -> List[int]:
    ids, todo = [], [node]
    while todo:
        here = todo.pop()
        ids.extend(here[1])
        todo.extend(here[0].values())
    return ids


_INDEXES: "weakref.WeakKeyDictionary[Any, VocabIndex]" = weakref.WeakKeyDictionary()


def vocab_index(tokenizer: Any) -> VocabIndex:
    """The tokenizer's index, built on first use (about a second for 49k tokens) and kept while it lives."""
    index = _INDEXES.get(tokenizer)
    if index is None:
        index = _INDEXES[tokenizer] = VocabIndex(tokenizer)
    return index
