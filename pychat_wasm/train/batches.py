"""How a micro-batch of examples becomes the arrays a step computes: padded, or packed over a shared prefix.

Padded: [B, T], T the longest example less one, shorter ones padded at the end (padding masked out of the loss).

Packed: conversations rendered with a model's chat template all begin with the same tokens (SmolLM2's default
system prompt and the user's header: 24 of the six facts' 46 to 85). A padded batch computes them B times; a
packed one lays the shared prefix out once and then each example's own tokens, as one row [1, N] with
N = P + sum(L_i - 1 - P), each example's tokens seeing the prefix and their own earlier tokens only:

    ids          s s s s | a a a | b b        P = 4 shared inputs, then examples a and b
    positions    0 1 2 3 | 4 5 6 | 4 5        each token's place in its own example (its RoPE angle)
    rows         0 0 0 0 | 0 0 0 | 1 1        the example a token's loss belongs to (the prefix counts none)
    sees         the prefix causally; a's tokens: the prefix and a's earlier tokens; b's: the prefix and b's

Every number a step takes from it is the padded batch's: the loss, each row's score, and the gradients (the
prefix's gradient is the sum of what each example sends it, as the padded batch's B copies sum theirs);
tests/oracle/test_train_packing.py checks that against the padded computation and torch. The prefix is shared
only where no target the loss counts lies in it, so each example keeps its own copy of every counted token.

    >>> b = make_batch([Example([1, 2, 5, 6, 7], [0, 0, 0, 1, 1]), Example([1, 2, 8, 9], [0, 0, 0, 1])], pad_id=0)
    >>> b.ids.tolist(), b.layout.positions.tolist(), b.layout.rows.tolist(), b.tokens
    ([[1, 2, 5, 6, 8]], [0, 1, 2, 3, 2], [0, 0, 0, 0, 1], 7)
    >>> b.targets.tolist(), b.mask.tolist()
    ([[2, 5, 6, 7, 9]], [[0.0, 0.0, 1.0, 1.0, 1.0]])
"""
from __future__ import annotations

import os
from typing import List, NamedTuple, Optional

import numpy as np

from .data import Example


class Layout(NamedTuple):
    """Where each token of a packed row sits: what attention and RoPE need besides the ids."""

    positions: np.ndarray  # [N] each token's position within its own example
    bias: np.ndarray  # [N, N] float32, 0 where token i sees token j, -inf elsewhere (added to the scores)
    rows: np.ndarray  # [N] the example each token belongs to (the shared prefix: 0, it counts no loss)
    examples: int  # B, the examples packed


class Batch(NamedTuple):
    ids: np.ndarray  # [B, T] inputs ([1, N] when packed)
    targets: np.ndarray  # [B, T] the next token of each input
    mask: np.ndarray  # [B, T] 1.0 where the loss counts the target
    tokens: int  # the examples' input positions that are not padding (packed or not, the same count)
    layout: Optional[Layout] = None  # packed: the tokens' positions, visibility and rows; None: padded


def pad_batch(examples: List[Example], pad_id: int) -> Batch:
    """Inputs and targets [B, T], T the longest example less one; shorter ones are padded at the end.

    >>> b = pad_batch([Example([5, 6, 7], [1, 1, 1]), Example([8, 9], [0, 1])], pad_id=2)
    >>> b.ids.tolist(), b.targets.tolist(), b.mask.tolist(), b.tokens
    ([[5, 6], [8, 9]], [[6, 7], [9, 2]], [[1.0, 1.0], [1.0, 0.0]], 3)
    """
    length = max(len(e.ids) for e in examples) - 1
    ids = np.full((len(examples), length + 1), pad_id, dtype=np.int64)
    mask = np.zeros((len(examples), length + 1), dtype=np.float32)
    for row, e in enumerate(examples):
        ids[row, :len(e.ids)] = e.ids
        mask[row, :len(e.mask)] = e.mask
    tokens = sum(len(e.ids) - 1 for e in examples)
    return Batch(ids[:, :-1], ids[:, 1:], mask[:, 1:], tokens)  # the mask belongs to the target token


def shared_prefix(examples: List[Example]) -> int:
    """How many first inputs all examples share without a counted target among them: input t predicts token
    t + 1, so inputs 0..P-1 are shared when the ids agree there and no mask is set at 1..P.

    >>> shared_prefix([Example([1, 2, 3, 4], [0, 0, 0, 1]), Example([1, 2, 3, 5], [0, 0, 0, 1])])
    2
    >>> shared_prefix([Example([1, 2, 3, 4], [0, 0, 1, 1]), Example([1, 2, 3, 5], [0, 0, 0, 1])])  # 2 is counted
    1
    """
    common = len(os.path.commonprefix([e.ids[:-1] for e in examples]))
    for e in examples:
        counted = [t for t in range(1, common + 1) if e.mask[t]]
        common = min(common, counted[0] - 1) if counted else common
    return common


def pack_batch(examples: List[Example], prefix: int) -> Batch:
    """One row: the first `prefix` inputs (shared_prefix's) once, then each example's remaining inputs."""
    ids, targets, mask, positions, rows = [], [], [], [], []
    first = examples[0]
    ids += first.ids[:prefix]
    targets += first.ids[1:prefix + 1]  # the shared inputs' targets count no loss (shared_prefix)
    mask += [0] * prefix
    positions += list(range(prefix))
    rows += [0] * prefix
    for row, e in enumerate(examples):
        n = len(e.ids) - 1 - prefix  # this example's own inputs
        ids += e.ids[prefix:-1]
        targets += e.ids[prefix + 1:]
        mask += e.mask[prefix + 1:len(e.ids)]
        positions += range(prefix, prefix + n)
        rows += [row] * n
    positions_a, rows_a = np.array(positions), np.array(rows)
    own = np.arange(len(ids)) >= prefix  # [N] tokens after the shared prefix
    # token i sees token j at or before its position, in the prefix or in its own example
    sees = (positions_a[None, :] <= positions_a[:, None]) & (~own[None, :] | (rows_a[None, :] == rows_a[:, None]))
    bias = np.where(sees, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)  # [N, N]
    layout = Layout(positions_a, bias, rows_a, len(examples))
    return Batch(np.array([ids], dtype=np.int64), np.array([targets], dtype=np.int64),
                 np.array([mask], dtype=np.float32), sum(len(e.ids) - 1 for e in examples), layout)


def make_batch(examples: List[Example], pad_id: int, pack: bool = True) -> Batch:
    """Packed over the examples' shared prefix when `pack` and that computes fewer positions than padding, else
    padded."""
    prefix = shared_prefix(examples) if pack and len(examples) > 1 else 0
    packed = sum(len(e.ids) - 1 - prefix for e in examples) + prefix
    padded = len(examples) * (max(len(e.ids) for e in examples) - 1)
    if prefix and packed < padded:
        return pack_batch(examples, prefix)
    return pad_batch(examples, pad_id)
