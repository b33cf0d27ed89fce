"""The KV cache: every layer's keys and values for the positions seen so far, preallocated, and the token ids
they belong to.

Allocated once for the whole context, so decoding a token writes into existing memory instead of
growing arrays. Layout [n_layers, n_kv_heads, context, head_dim]: one kv head's keys for a range of
positions form a contiguous block, which is what attention multiplies with. `ids` is the one record of how
many positions are filled and with which tokens: Model.forward writes it, a chat session reads it to reuse
the prefix a new prompt shares with it.

    >>> cache = KVCache(n_layers=2, n_kv_heads=1, context_length=8, head_dim=4)
    >>> cache.store(0, 0, np.ones((3, 1, 4), np.float32), np.zeros((3, 1, 4), np.float32))
    >>> cache.keys(0, 0, 3).shape
    (1, 3, 4)
"""
from __future__ import annotations

from typing import List

import numpy as np


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, context_length: int, head_dim: int):
        shape = (n_layers, n_kv_heads, context_length, head_dim)
        self.k = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.ids: List[int] = []  # the token at each filled position, in order: len(ids) positions are filled

    @staticmethod
    def bytes_needed(n_layers: int, n_kv_heads: int, context_length: int, head_dim: int) -> int:
        return 2 * 4 * n_layers * n_kv_heads * context_length * head_dim

    @property
    def nbytes(self) -> int:
        return int(self.k.nbytes + self.v.nbytes)

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Write k, v [n_tokens, n_kv_heads, head_dim] for positions start..start+n_tokens-1."""
        stop = start + k.shape[0]
        self.k[layer, :, start:stop] = k.transpose(1, 0, 2)  # [n_kv_heads, n_tokens, head_dim]
        self.v[layer, :, start:stop] = v.transpose(1, 0, 2)

    def truncate(self, length: int) -> None:
        """Forget the positions from `length` on (e.g. draft tokens the sampler did not choose): the next
        forward pass from there overwrites their keys and values."""
        del self.ids[length:]

    def keys(self, layer: int, start: int, stop: int) -> np.ndarray:
        return self.k[layer, :, start:stop]  # [n_kv_heads, stop-start, head_dim], a view

    def values(self, layer: int, start: int, stop: int) -> np.ndarray:
        return self.v[layer, :, start:stop]  # [n_kv_heads, stop-start, head_dim], a view
