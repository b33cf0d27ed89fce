"""The merge loop BPE and SentencePiece share: join adjacent symbols, best pair first, with a priority queue.

Each step joins the adjacent pair with the lowest priority (ties: the leftmost), as llama.cpp's
`llm_tokenizer_bpe`/`llm_tokenizer_spm` and HF tokenizers do. A heap of candidate pairs keyed
(priority, left index) makes a word of n symbols cost O(n log n); rescanning all pairs after every join
would cost O(n^2), 13 s for 32,000 letters without a space.

    >>> merge_adjacent(list("aaa"), lambda a, b: 0 if a + b == "aa" else None)
    ['aa', 'a']
"""
from __future__ import annotations

import heapq
from typing import Callable, List, Optional, Tuple

Priority = Callable[[str, str], Optional[float]]  # (left, right) -> priority of joining them, None: never


def merge_adjacent(symbols: List[str], priority: Priority) -> List[str]:
    """Join adjacent symbols lowest priority first until no adjacent pair has one."""
    pieces = list(symbols)  # a merged-away symbol becomes ""
    next_of = list(range(1, len(pieces) + 1))
    prev_of = list(range(-1, len(pieces) - 1))
    if pieces:
        next_of[-1] = -1
    queue: List[Tuple[float, int, int, int]] = []  # (priority, left index, right index, joined length)

    def offer(left: int, right: int) -> None:
        if left >= 0 and right >= 0:
            rank = priority(pieces[left], pieces[right])
            if rank is not None:
                heapq.heappush(queue, (rank, left, right, len(pieces[left]) + len(pieces[right])))

    for i in range(1, len(pieces)):
        offer(i - 1, i)
    while queue:
        _, left, right, size = heapq.heappop(queue)
        if not pieces[left] or not pieces[right] or len(pieces[left]) + len(pieces[right]) != size:
            continue  # stale: one side was merged since this pair was offered
        pieces[left] += pieces[right]
        pieces[right] = ""
        next_of[left] = next_of[right]
        if next_of[right] >= 0:
            prev_of[next_of[right]] = left
        offer(prev_of[left], left)
        offer(left, next_of[left])
    return [p for p in pieces if p]
