"""The KV cache's bookkeeping: on a GPU every position past the held tokens stays zero, because
the recorded decode step (cuda_graph.py) reads them masked, and a masked inf or NaN would still
poison its sums. Checked on the CPU with the GPU's rule switched on."""

from __future__ import annotations

import torch

from qwenchat.engine.cache import KVCache


def gpu_like_cache(max_len: int = 16) -> KVCache:
    cache = KVCache(2, 1, 4, max_len, torch.float32, torch.device("cpu"))
    cache.zeroed = True
    cache.k.zero_(), cache.v.zero_()
    return cache


def written(cache: KVCache, pos: int, n: int, value: float) -> None:
    for layer in range(2):
        kv = torch.full((1, 1, n, 4), value)
        cache.layers[layer].update(pos, kv, kv)  # what each layer of the model is handed


def test_positions_given_up_by_trim_are_zeroed_cancelled_ones_too():
    cache = gpu_like_cache()
    written(cache, 0, 6, 1.0)
    cache.tokens.extend(range(6))
    written(cache, 6, 4, float("inf"))  # a prompt cancelled part-way: written, never recorded
    cache.trim(3)
    assert torch.all(cache.k[:, :, :, :3] == 1.0) and torch.all(cache.k[:, :, :, 3:] == 0)
    assert torch.all(cache.v[:, :, :, 3:] == 0) and cache.length == 3
    written(cache, 3, 2, float("nan"))
    cache.tokens.extend([7, 8])
    cache.reset()
    assert not cache.k.any() and not cache.v.any() and cache.length == 0


def test_a_cpu_cache_is_not_zeroed():
    cache = KVCache(2, 1, 4, 16, torch.float32, torch.device("cpu"))
    assert not cache.zeroed
    written(cache, 0, 4, 2.0)
    cache.tokens.extend(range(4))
    cache.trim(1)
    assert torch.all(cache.k[:, :, :, 1:4] == 2.0)  # left as it was: the CPU never reads past the tokens
