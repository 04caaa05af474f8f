"""Recent conversations' KV caches, put aside so that switching back to one does not prefill it
again: two API clients taking turns, or the chat app moving between conversations.

The engine keeps one working `KVCache`. Before a prompt is prefilled, `CachePool.prepare(cache,
ids)` looks for a put-aside conversation that shares a longer prefix with `ids` than the working
cache does. If there is one, the working cache's filled part is copied out (put aside) and the
match copied in, so the prompt then prefills only its new tokens. If there is none and the
prompt shares less than half of the working cache (another conversation, not an edit or a
regeneration of this one), the working cache is put aside before the prompt overwrites it. A copy moves the keys/values
of n tokens (for a 0.5B model in float32, 24 layers x 2 heads x 64 x 4 bytes x 2 = 24 KB a token:
50 MB and a few milliseconds for 2000 tokens, where prefilling them takes seconds on a CPU).

Put-aside caches stay on the cache's device, take only their filled length, and live within a
byte budget: the least recently used go first, and one that alone exceeds the budget is not
kept. A put-aside cache that is a prefix of the working one (the same conversation, earlier)
is dropped as superseded. Nothing here knows about conversations or messages: only token ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwenchat.engine.cache import KVCache

DEFAULT_BUDGET_BYTES = 1 << 30  # 1 GiB: some 40,000 tokens of a 0.5B model in float32


@dataclass
class _Saved:
    tokens: list[int]
    k: torch.Tensor  # (L, 1, Hkv, n, D)
    v: torch.Tensor

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


class CachePool:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError(f"the KV cache budget is {budget_bytes} bytes; it must be 0 or more")
        self.budget = budget_bytes
        self._saved: list[_Saved] = []  # least recently used first

    def __len__(self) -> int:
        return len(self._saved)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._saved)

    @property
    def conversations(self) -> list[list[int]]:
        """The put-aside token sequences, least recently used first (for tests and stats)."""
        return [list(s.tokens) for s in self._saved]

    def prepare(self, cache: KVCache, ids: list[int]) -> int:
        """Make `cache` hold the longest prefix of `ids` that the working cache or any put-aside
        one holds; returns that prefix's length."""
        best, best_n = None, cache.common_prefix(ids)
        for i, saved in enumerate(self._saved):
            n = _common_prefix(saved.tokens, ids)
            if n > best_n:
                best, best_n = i, n
        if best is None:
            if best_n < cache.length // 2:  # another conversation: keep this one before it is overwritten
                self.put_aside(cache)
            return best_n
        chosen = self._saved.pop(best)
        self.put_aside(cache)
        _restore(cache, chosen)
        return best_n

    def put_aside(self, cache: KVCache) -> None:
        """Copy the working cache's filled part into the pool (most recently used)."""
        n = cache.length
        if n == 0 or self.budget == 0:
            return
        self._saved = [s for s in self._saved if not _is_prefix(s.tokens, cache.tokens)]
        saved = _Saved(list(cache.tokens), cache.k[:, :, :, :n].clone(), cache.v[:, :, :, :n].clone())
        if saved.nbytes > self.budget:
            return
        self._saved.append(saved)
        while self.nbytes > self.budget:
            self._saved.pop(0)

    def clear(self) -> None:
        self._saved.clear()


def _restore(cache: KVCache, saved: _Saved) -> None:
    cache.trim(0)  # on a GPU this zeroes what the working cache held past the restored part
    n = len(saved.tokens)
    cache.k[:, :, :, :n].copy_(saved.k)
    cache.v[:, :, :, :n].copy_(saved.v)
    cache.tokens[:] = saved.tokens


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _is_prefix(short: list[int], long: list[int]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short
