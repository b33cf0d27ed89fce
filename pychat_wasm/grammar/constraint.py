"""GrammarConstraint: which tokens may come next in one generation, and the state after each token.

    >>> constraint = GrammarConstraint(Grammar.parse('root ::= "yes" | "no"'), tokenizer)   # doctest: +SKIP
    >>> constraint.allowed(tokenizer.encode("yes", add_special=False)[0])                  # doctest: +SKIP
    True
    >>> mask = constraint.allowed_mask(len(logits))  # doctest: +SKIP

It follows llama.cpp's llama_grammar_apply_impl / llama_grammar_accept_impl: an end-of-generation token
(EOS/EOT) is allowed only where the grammar may end, a token without text never; other special tokens
are refused unless the grammar names their id. Masks are cached per parse state, since generation often
returns to one (every character inside a JSON string leaves the state as it was).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import GrammarError
from .gbnf import TOKEN, Grammar
from .matcher import Matcher, Partial
from .vocab_index import vocab_index

MASK_CACHE_SIZE = 256


class GrammarConstraint:
    """One generation's grammar state over a tokenizer's vocabulary."""

    def __init__(self, grammar: Grammar, tokenizer: Any, matcher: Optional[Matcher] = None):
        self.matcher = matcher or Matcher(grammar)
        self.index = vocab_index(tokenizer)
        self.state = self.matcher.initial
        self.partial: Optional[Partial] = None
        self.ended = False  # an end-of-generation token was accepted
        self._end_ids = set(self.index.end_ids)
        self._masks: Dict[int, np.ndarray] = {}
        self._loops: Dict[int, tuple] = {}  # state -> (characters known to loop, characters known not to)

    @classmethod
    def from_gbnf(cls, text: str, tokenizer: Any, root: str = "root") -> "GrammarConstraint":
        return cls(Grammar.parse(text, root), tokenizer)

    # -- queries -----------------------------------------------------------------------------------

    @property
    def can_end(self) -> bool:
        """The text so far is a complete match (an end-of-generation token would be allowed)."""
        return self.partial is None and self.matcher.allows_end(self.state)

    @property
    def is_done(self) -> bool:
        """Nothing more may be generated: the end token was accepted, or the grammar cannot go on."""
        return self.ended or self.matcher.states[self.state] == ((),)

    def allowed(self, token_id: int) -> bool:
        return not self.ended and self._next(token_id)[0] != self.matcher.dead

    def allowed_mask(self, size: Optional[int] = None) -> np.ndarray:
        """[size] bool: True for each token id that may come next (ids past the vocabulary are False)."""
        size = self.index.vocab_size if size is None else size
        if self.ended:
            return np.zeros(size, dtype=bool)
        mask = self._masks.get(self.state) if self.partial is None else None
        if mask is None:
            mask = np.zeros(self.index.vocab_size, dtype=bool)
            mask[self._allowed_ids()] = True
            if self.partial is None:
                if len(self._masks) >= MASK_CACHE_SIZE:
                    self._masks.clear()
                    self._loops.clear()
                self._masks[self.state] = mask
        if size == mask.shape[0]:
            return mask.copy()  # the cached one stays as it is
        out = np.zeros(size, dtype=bool)
        n = min(size, mask.shape[0])
        out[:n] = mask[:n]
        return out

    # -- the step ----------------------------------------------------------------------------------

    def accept(self, token_id: int) -> None:
        """Advance past `token_id`; a GrammarError if the grammar does not allow it here."""
        if self.ended:
            raise GrammarError("the grammar already ended; token %d cannot follow" % token_id)
        state, partial = self._next(token_id)
        if state == self.matcher.dead:
            raise GrammarError("token %d (%r) is not allowed by the grammar here"
                               % (token_id, self.index.token_bytes[token_id]))
        if token_id in self._end_ids and self.can_end:
            self.ended = True
            return
        self.state, self.partial = state, partial

    def _next(self, token_id: int):
        """(state, partial) after `token_id`, the dead state if refused; end tokens keep the state."""
        matcher = self.matcher
        if token_id in self._end_ids and self.can_end:
            return self.state, None
        if token_id not in self.index.textual_set:
            # only a grammar that names the id (<[id]>) lets such a token through
            return (matcher.step_token(self.state, token_id) if self.partial is None else matcher.dead), None
        return matcher.accept_piece(self.state, self.partial, token_id, self.index.token_bytes[token_id])

    def _allowed_ids(self) -> List[int]:
        """Every id that may come next: the trie walk, ragged tokens, token elements, end tokens."""
        matcher, index = self.matcher, self.index
        allowed: List[int] = []
        if self.partial is None:
            allowed.extend(self._walk_trie(matcher.char_part(self.state)))
            if matcher.allows_end(self.state):
                allowed.extend(index.end_ids)
            if matcher.has_token_tops(self.state):
                allowed.extend(self._by_id())
        dead = matcher.dead  # tokens with a split character, one by one (the only candidates after one)
        allowed.extend(t for t in index.ragged
                       if matcher.accept_piece(self.state, self.partial, t, index.token_bytes[t])[0] != dead)
        return allowed

    def _walk_trie(self, state: int) -> List[int]:
        """Ids of the trie's tokens readable from `state`; a subtree whose characters all loop is taken whole."""
        matcher = self.matcher
        steps, step, dead = matcher.steps, matcher.step, matcher.dead
        allowed: List[int] = []
        todo = [(self.index.trie, state)]
        while todo:
            node, here = todo.pop()
            here_steps = steps[here]
            for point, child in node[0].items():
                nxt = here_steps.get(point)
                if nxt is None:
                    nxt = step(here, point)
                if nxt == dead:
                    continue
                if nxt == here and child[2] is not None and self._all_loop(here, child[2]):
                    allowed.extend(child[3])
                    continue
                allowed.extend(child[1])
                if child[0]:
                    todo.append((child, nxt))
        return allowed

    def _all_loop(self, state: int, chars: frozenset) -> bool:
        """Whether every character of `chars` leaves `state` unchanged (known answers kept per state)."""
        loops, breaks = self._loops.setdefault(state, (set(), set()))
        if chars <= loops:
            return True
        if not breaks.isdisjoint(chars):
            return False
        for point in chars - loops:
            if self.matcher.step(state, point) == state:
                loops.add(point)
            else:
                breaks.add(point)
                return False
        return True

    def _by_id(self) -> List[int]:
        """Ids allowed by stacks topped by <[id]> (that id) or !<[id]> (every textual token but that id)."""
        ids: List[int] = []
        for stack in self.matcher.states[self.state]:
            if stack and stack[-1] not in self.matcher.char_sets:
                kind, value = self.matcher.elements[stack[-1]]
                if kind == TOKEN:
                    ids.append(value)
                else:
                    ids.extend(t for t in self.index.textual if t != value)
        return [t for t in ids if 0 <= t < self.index.vocab_size]
