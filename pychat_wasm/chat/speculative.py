"""Prompt-lookup speculative decoding: guess the next tokens by copying what followed an earlier occurrence of
the latest ones, check all the guesses in one forward pass, keep those the sampler chooses anyway.

Answers that rewrite a paragraph or fix a piece of code repeat long runs of their prompt. When the last
tokens of prompt + answer (an n-gram of 2 to 4 tokens) occurred before, the tokens that followed them then
are the draft, as llama.cpp's ngram drafting and llama-cpp-python's LlamaPromptLookupDecoding do:

    >>> PromptLookup().draft([5, 6, 7, 8, 9, 5, 6], room=3)      # "5 6" was followed by 7 8 9
    [7, 8, 9]

The token loop (session.py) asks a feed for the logits after each sampled token. SpeculativeFeed runs that
token together with a draft of the tokens after it: one pass over [token, d1..dk] gives the logits after
each of them (a matrix product over k+1 rows reads the weights once, as k+1 single-token passes read them
k+1 times). The loop samples from the row after `token` as it always does; if it samples d1, the row after
d1 is already there, and so on. At the first token that differs from the draft, the rest of the draft is
rolled back (the KV cache forgets it) and a new pass starts from the token sampled.

Exact output: every token is sampled by the same sampler, with the same settings, history, penalties,
grammar and random stream, from logits of the same prefix, so greedy output is the same with or without
speculation and sampled output has the same distribution (with a fixed seed, the same tokens). For a draft
token d this is the speculative-sampling rule for a draft that puts all its mass on d (Leviathan et al. 2023,
Chen et al. 2023): d is kept with probability p(d), and when it is not, the token comes from p with d
removed and renormalised; sampling t ~ p and keeping d when t == d is that rule. A drafted token the grammar
refuses is never sampled, so it is rejected. Only rounding differs: a pass over k+1 rows may sum in another
order than k+1 single-row passes (about 1e-6 of a logit), as prompt chunking already does.

PlainFeed is the loop without speculation: one forward pass per token.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

MIN_MATCH = 2  # the shortest n-gram that may start a draft: a single repeated token predicts too little
MAX_MATCH = 4  # the longest n-gram looked up; the longest one that matches wins
DRAFT_TOKENS = 8  # the most tokens drafted at once
FIRST_DRAFT = 2  # tokens of an answer's first draft (SpeculativeFeed grows and shrinks it)
MIN_HIT_RATE = 0.5  # drafts run only while at least this share of their first tokens was right
HIT_RATE_START, HIT_RATE_WEIGHT = 0.5, 0.25  # the moving average's start and the weight of each new draft


class PromptLookup:
    """Drafts from an index of every n-gram (MIN_MATCH..MAX_MATCH tokens) of a token history to the position
    after its latest occurrence; `extend` adds the tokens of a growing history. Counts what it drafted and
    what was kept, over its life."""

    def __init__(self, min_match: int = MIN_MATCH, max_match: int = MAX_MATCH, draft_tokens: int = DRAFT_TOKENS):
        self.min_match, self.max_match, self.draft_tokens = min_match, max_match, draft_tokens
        self.drafted = 0  # draft tokens checked by a forward pass
        self.accepted = 0  # of which the sampler chose
        self.reset()

    def reset(self) -> None:
        self.ids: List[int] = []
        self.follower: Dict[Tuple[int, ...], int] = {}  # n-gram -> position of the token after its latest occurrence

    def extend(self, ids: Sequence[int]) -> None:
        """Append `ids` to the history, indexing each n-gram that now has a token after it."""
        history = self.ids
        for token in ids:
            history.append(int(token))
            end = len(history) - 1  # the new token follows the n-grams ending just before it
            for n in range(self.min_match, min(self.max_match, end) + 1):
                self.follower[tuple(history[end - n:end])] = end

    def draft(self, ids: Sequence[int] = (), room: int = DRAFT_TOKENS) -> List[int]:
        """Up to min(room, draft_tokens) tokens that followed the latest earlier occurrence of the longest
        n-gram ending the history (after extending it by `ids`); [] when none occurred before."""
        self.extend(ids)
        history, room = self.ids, min(room, self.draft_tokens)
        for n in range(min(self.max_match, len(history)), self.min_match - 1, -1):
            after = self.follower.get(tuple(history[-n:]))
            if after is not None and room > 0:
                return history[after:after + room]
        return []


class PlainFeed:
    """One forward pass per token: the loop without speculation."""

    def __init__(self, model: Any):
        self.model = model

    @property
    def history(self) -> List[int]:
        """The tokens before the next one: the prompt and the answer so far (what the sampler penalises)."""
        return self.model.cache.ids

    def next_logits(self, token: int, room: int) -> np.ndarray:
        """The logits [vocab] after `token`; `room`: how many more tokens the answer may take."""
        return self.model.forward([token], start_pos=len(self.model.cache.ids))

    def finish(self) -> None:
        """The answer ended: nothing is pending."""


class SpeculativeFeed:
    """The logits after each sampled token, from passes over the token and a prompt-lookup draft (see the
    module docstring). The KV cache may hold draft tokens not yet checked: `history` is what is real, and
    `finish` rolls back the rest.

    Checking a draft token is not free (on a machine whose products are bound by arithmetic rather than by
    reading the weights, a pass over k+1 rows costs more than one over one row), so a draft runs only while
    it pays: `hit_rate` follows how often a draft's first token was the one sampled (a moving average over
    drafts, checked or not: a draft left unchecked is still compared with the token that came), and below
    MIN_HIT_RATE the draft is only compared, not run. The draft grows while whole drafts are kept (2, 4, 8
    tokens) and shrinks to what was kept when one is not.
    """

    def __init__(self, model: Any, lookup: PromptLookup):
        self.model, self.lookup = model, lookup
        self.length = len(model.cache.ids)  # the real tokens in the cache: the rest are unchecked draft
        self.pending: List[int] = []  # draft tokens in the cache after the real ones, in order
        self.rows: List[np.ndarray] = []  # the logits [vocab] after each pending draft token
        self.checked = 0  # tokens of the last draft run through the model
        self.unchecked: List[int] = []  # the last draft when it was not run: compared with the next token
        self.hit_rate = HIT_RATE_START
        self.draft_length = FIRST_DRAFT
        lookup.reset()
        lookup.extend(model.cache.ids)

    @property
    def history(self) -> List[int]:
        ids = self.model.cache.ids
        return ids if len(ids) == self.length else ids[:self.length]

    def next_logits(self, token: int, room: int) -> np.ndarray:
        if self.pending and self.pending[0] == token:  # the sampler chose the draft: its row is ready
            self.pending.pop(0)
            self.length += 1
            self.lookup.accepted += 1
            self.lookup.extend([token])
            return self.rows.pop(0)
        self._score(token)
        self.finish()
        context_left = self.model.config.context_length - self.length - 1  # positions after `token`
        draft = self.lookup.draft([token], room=min(self.draft_length, room - 1, context_left))
        if self.hit_rate < MIN_HIT_RATE:
            self.unchecked, draft = draft, []
        logits = self.model.forward([token] + draft, start_pos=self.length, all_logits=True)  # [1 + k, vocab]
        self.length += 1
        self.lookup.drafted += len(draft)
        self.checked, self.pending, self.rows = len(draft), draft, list(logits[1:])
        return logits[0]

    def _score(self, token: int) -> None:
        """Learn from the draft that `token` ends: how much of it was kept, or whether it would have been."""
        if self.checked:
            kept = self.checked - len(self.pending)
            self._hit(kept > 0)
            self.draft_length = min(2 * self.draft_length, self.lookup.draft_tokens) if kept == self.checked \
                else max(1, kept)
        elif self.unchecked:
            self._hit(self.unchecked[0] == token)
        self.checked, self.unchecked = 0, []

    def _hit(self, hit: bool) -> None:
        self.hit_rate += HIT_RATE_WEIGHT * (float(hit) - self.hit_rate)

    def finish(self) -> None:
        """Roll back the draft tokens not chosen: the cache holds exactly the real tokens again."""
        self.model.cache.truncate(self.length)
        self.pending, self.rows = [], []


def token_feed(model: Any, lookup: Optional[PromptLookup]) -> Any:
    """The feed of a token loop: speculative with a PromptLookup, plain without."""
    return PlainFeed(model) if lookup is None else SpeculativeFeed(model, lookup)
