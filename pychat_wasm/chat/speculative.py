"""Prompt-lookup speculative decoding: guess the next tokens by copying what followed an earlier occurrence of
the latest ones in the prompt, check all the guesses in one forward pass, keep those the sampler chooses anyway.

Answers that rewrite a paragraph or fix a piece of code repeat long runs of their prompt. When the last
tokens of prompt + answer (an n-gram of 3 or 4 tokens) occur in the prompt, the tokens that followed them
there are the draft, as llama.cpp's ngram drafting and llama-cpp-python's LlamaPromptLookupDecoding do:

    >>> lookup = PromptLookup()
    >>> lookup.reset([5, 6, 7, 8, 9, 4])                     # the prompt
    >>> lookup.extend([2, 6, 7, 8])                          # the answer so far ends with "6 7 8"...
    >>> lookup.draft(room=3)                                 # ...which the prompt continued with 9 4
    [9, 4]

The token loop (session.py) asks a feed for the logits after each sampled token. SpeculativeFeed runs that
token together with a draft of the tokens after it: one pass over [token, d1..dk] gives the logits after
each of them (a matrix product over k+1 rows reads the weights once, as k+1 single-token passes read them
k+1 times; natively it goes band by band so that it costs little more than one row: model/products.py). The
loop samples from the row after `token` as it always does; if it samples d1, the row after d1 is already
there, and so on. At the first token that differs from the draft, the rest of the draft is rolled back (the
KV cache forgets it) and a new pass starts from the token sampled.

When to draft, so that plain answers lose nothing: only from the prompt (what the user wrote or attached, and
earlier turns), never from the answer so far, whose own repetitions are a model's loops rather than copying;
only on a match of MIN_MATCH or more tokens; a first draft of FIRST_DRAFT tokens, doubled while whole drafts
are kept (up to DRAFT_TOKENS) and cut to what was kept when one is not; and only while drafts pay (see
SpeculativeFeed).

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

MIN_MATCH = 3  # the shortest n-gram that may start a draft: shorter ones recur by chance in any answer
MAX_MATCH = 4  # the longest n-gram looked up; the longest one that matches wins
DRAFT_TOKENS = 7  # the most tokens drafted at once: a pass of 8 rows (model/products.py's FEW_ROWS)
FIRST_DRAFT = 2  # tokens of an answer's first draft (SpeculativeFeed grows and shrinks it)
MIN_HIT_RATE = 0.5  # drafts run only while at least this share of their first tokens was right
HIT_RATE_START, HIT_RATE_WEIGHT = 0.5, 0.25  # the moving average's start and the weight of each new draft
MAX_MISSES = 4  # drafts run whose first token was refused, more than were kept: no more drafts in this answer


class PromptLookup:
    """Drafts from an index of every n-gram (MIN_MATCH..MAX_MATCH tokens) of a source, the prompt, to the
    position after its latest occurrence there; `extend` follows the answer, whose last tokens are looked up."""

    def __init__(self, min_match: int = MIN_MATCH, max_match: int = MAX_MATCH, draft_tokens: int = DRAFT_TOKENS):
        self.min_match, self.max_match, self.draft_tokens = min_match, max_match, draft_tokens
        self.reset()

    def reset(self, source: Sequence[int] = ()) -> None:
        """Index `source`, the tokens drafts are copied from; the history looked up starts as its end."""
        self.source = [int(token) for token in source]
        self.follower: Dict[Tuple[int, ...], int] = {}  # n-gram -> position after its latest occurrence in source
        for end in range(1, len(self.source)):  # the token at `end` follows the n-grams ending just before it
            for n in range(self.min_match, min(self.max_match, end) + 1):
                self.follower[tuple(self.source[end - n:end])] = end
        self.recent = self.source[-self.max_match:]  # the last tokens of prompt + answer

    def extend(self, ids: Sequence[int]) -> None:
        """The answer went on with `ids`."""
        self.recent = (self.recent + [int(token) for token in ids])[-self.max_match:]

    def draft(self, room: int = DRAFT_TOKENS) -> List[int]:
        """Up to min(room, draft_tokens) tokens that followed the latest occurrence in the source of the
        longest n-gram ending the history; [] when it has none."""
        room = min(room, self.draft_tokens)
        for n in range(min(self.max_match, len(self.recent)), self.min_match - 1, -1):
            after = self.follower.get(tuple(self.recent[-n:]))
            if after is not None and room > 0:
                return self.source[after:after + room]
        return []


class PlainFeed:
    """One forward pass per token: the loop without speculation."""

    drafted = accepted = 0  # no drafts

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

    Checking a draft token is not free (a pass over k+1 rows costs more than one over one row), so a draft
    runs only while it pays: `hit_rate` follows how often a draft's first token was the one sampled (a moving
    average over drafts, checked or not: a draft left unchecked is still compared with the token that came),
    and below MIN_HIT_RATE the draft is only compared, not run. After MAX_MISSES checked drafts whose first
    token was refused, more than were kept, the answer is not one that copies: no more drafts. The draft grows
    while whole drafts are kept (2, 4, 7 tokens) and shrinks to what was kept when one is not.
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
        self.hits = self.misses = 0  # checked drafts whose first token was kept / refused, in this answer
        self.drafted = self.accepted = 0  # this answer's draft tokens checked by a pass / the sampler chose
        lookup.reset(model.cache.ids)

    @property
    def history(self) -> List[int]:
        ids = self.model.cache.ids
        return ids if len(ids) == self.length else ids[:self.length]

    @property
    def retired(self) -> bool:
        """No more drafts in this answer: they were refused too often."""
        return self.misses >= MAX_MISSES and self.misses > self.hits

    def next_logits(self, token: int, room: int) -> np.ndarray:
        self.lookup.extend([token])
        if self.pending and self.pending[0] == token:  # the sampler chose the draft: its row is ready
            self.pending.pop(0)
            self.length += 1
            self.accepted += 1
            return self.rows.pop(0)
        self._score(token)
        self.finish()
        draft: List[int] = []
        if not self.retired:
            context_left = self.model.config.context_length - self.length - 1  # positions after `token`
            draft = self.lookup.draft(room=min(self.draft_length, room - 1, context_left))
            if self.hit_rate < MIN_HIT_RATE:
                self.unchecked, draft = draft, []
        logits = self.model.forward([token] + draft, start_pos=self.length, all_logits=True)  # [1 + k, vocab]
        self.length += 1
        self.drafted += len(draft)
        self.checked, self.pending, self.rows = len(draft), draft, list(logits[1:])
        return logits[0]

    def _score(self, token: int) -> None:
        """Learn from the draft that `token` ends: how much of it was kept, or whether it would have been."""
        if self.checked:
            kept = self.checked - len(self.pending)
            self._hit(kept > 0)
            self.hits, self.misses = self.hits + (kept > 0), self.misses + (kept == 0)
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
