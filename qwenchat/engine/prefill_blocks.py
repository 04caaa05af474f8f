"""The pieces of a layer-major prefill on the CPU (model.py's `Qwen2ForCausalLM._prefill` and
`DecoderLayer.prefill`): row blocks that bound activation memory, query blocks for attention on
top of a cache, activation buffers reused across layers, and the exception a cancelled chunk
raises. Plain functions of tensors; model.py owns the layers that use them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ROW_BLOCK = 2048  # most rows per prefill block: bounds the MLP's (rows, 2I) temporary (80 MB at 2I = 9728); 1024: ~2% slower, ~65 MB less peak
QUERY_BLOCK = 1024  # most queries per attention call on top of a cache: its mask is (rows, pos+T) (134 MB at 32K)


class PrefillCancelled(Exception):
    """A prompt chunk stopped between layers because its cancel event was set; the cache's
    positions from the chunk's start on hold partial keys/values (unrecorded, so unused)."""


class Workspace:
    """Activation buffers by name, reused by every layer of one prefill: a fresh 40 MB tensor per
    matrix product page-faults ~10,000 times on the CPU (~15% of the product's time)."""

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, like: torch.Tensor, *shape: int) -> torch.Tensor:
        """A contiguous tensor of `shape` with `like`'s dtype and device; contents undefined."""
        n = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < n:
            buf = self._bufs[name] = like.new_empty(n)
        return buf[:n].view(shape)


def layer_major(device: torch.device) -> bool:
    """Whether prompt chunks run layer-major (Qwen2ForCausalLM._prefill): on the CPU, where it
    was measured; other devices keep the plain per-layer forward()."""
    return device.type == "cpu"


def row_blocks(T: int, most: int | None = None) -> list[tuple[int, int]]:
    """[start, end) ranges covering T rows, at most `most` (default ROW_BLOCK) each and of
    near-equal sizes (a tiny last block would take the int8 kernel's few-rows path for nothing)."""
    n = -(-T // (most or ROW_BLOCK))
    size = -(-T // n)
    return [(a, min(a + size, T)) for a in range(0, T, size)]


def block_mask(pos: int, T: int, block: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The additive causal mask of query blocks of a chunk at positions pos..pos+T-1, (block,
    pos+T): a block of b rows whose last key is K-1 uses `mask[block - b:, pos + T - K:]`
    (row i of that view hides keys after K - b + i, its own position)."""
    width = pos + T
    rows = torch.arange(block, device=device)[:, None]
    hidden = torch.arange(width, device=device)[None, :] > rows + (width - block)  # (block, width)
    return torch.zeros(hidden.shape, dtype=dtype, device=device).masked_fill_(hidden, float("-inf"))


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Queries at positions pos..pos+T-1 (q (B, Hq, T, D)) against keys 0..pos+T-1 (k/v (B, Hkv,
    pos+T, D)) -> out (B, T, Hq, D). SDPA's is_causal aligns to the top-left corner, so a chunk on top
    of a cache needs an explicit mask; taking the queries in blocks, each against the keys up to
    its own last position, leaves only a block's triangle masked out (not the chunk's), and the
    mask is a block's rows (block_mask), not the chunk's."""
    T, gqa = q.shape[2], q.shape[1] != k.shape[1]
    block, width = mask.shape
    for a, end in row_blocks(T, block):
        b = end - a
        K = width - T + end  # keys this block sees
        m = mask[block - b :, width - K :]  # (b, K)
        y = F.scaled_dot_product_attention(q[:, :, a:end], k[:, :, :K], v[:, :, :K], attn_mask=m, enable_gqa=gqa)
        out[:, a:end] = y.transpose(1, 2)  # (B, b, Hq, D)
    return out
