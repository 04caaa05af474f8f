"""A preallocated key/value cache for one conversation.

Buffers for the whole context window are reserved once with `torch.empty` (on the CPU the OS
commits pages only as they are written, so a 32K window costs memory only as it fills). On a GPU
every position past the held tokens is kept zero (zeroed buffers; positions given up by `trim`
zeroed again): its recorded decode step (cuda_graph.py) reads them and masks them out, and a
masked position's value still meets a zero weight, where 0 x NaN or 0 x inf (an overflow in a
float16 reply) would poison every later step. The
model writes new keys/values in place; nothing is concatenated or reallocated per token.
`tokens` records which token ids the cache holds, so the next turn can reuse the longest common
prefix and prefill only what changed. Each layer of the model is handed its own part,
`cache.layers[i]` (a `LayerCache`), as in mlx-lm: a layer knows nothing of the others.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (n_layers, 1, n_kv_heads, max_len, head_dim)  # (L, B, Hkv, S, D)
        self.zeroed = torch.device(device).type != "cpu"  # positions past the tokens kept zero
        alloc = torch.zeros if self.zeroed else torch.empty
        self.k = alloc(shape, dtype=dtype, device=device)
        self.v = alloc(shape, dtype=dtype, device=device)
        self._written = 0  # positions 0.. ever written since the last trim (a cancelled prompt's too)
        self.layer_k, self.layer_v = self.k.unbind(0), self.v.unbind(0)  # views, made once
        self.layers = [LayerCache(self, i) for i in range(n_layers)]
        self.max_len = max_len
        self.tokens: list[int] = []

    @property
    def length(self) -> int:
        return len(self.tokens)

    def update(
        self, layer: int, pos: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, Hkv, T, D) at positions pos.. and return the keys/values 0..pos+T."""
        end = pos + k.shape[2]
        self._written = max(self._written, end)
        lk, lv = self.layer_k[layer], self.layer_v[layer]
        lk[:, :, pos:end] = k
        lv[:, :, pos:end] = v
        return lk[:, :, :end], lv[:, :, :end]

    def trim(self, length: int) -> None:
        """Forget everything after the first `length` tokens (the buffers are reused; on a GPU
        the positions given up are zeroed, see the module docstring)."""
        written = max(self._written, len(self.tokens))
        if self.zeroed and length < written:
            self.k[:, :, :, length:written].zero_()
            self.v[:, :, :, length:written].zero_()
        self._written = min(written, length)
        del self.tokens[length:]

    def reset(self) -> None:
        self.trim(0)

    def common_prefix(self, ids: list[int]) -> int:
        """How many leading ids of `ids` the cache already holds."""
        n = 0
        for cached, new in zip(self.tokens, ids):
            if cached != new:
                break
            n += 1
        return n


class LayerCache:
    """One layer's keys/values in a KVCache (model.py's KVWriter)."""

    unwritten = None  # every position update returns has been written

    def __init__(self, cache: KVCache, layer: int) -> None:
        self._cache, self._layer = cache, layer

    def update(self, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, Hkv, T, D) at positions pos.. and return the keys/values 0..pos+T."""
        return self._cache.update(self._layer, pos, k, v)
