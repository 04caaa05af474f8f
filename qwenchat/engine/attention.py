"""Attention and rotary positions for Qwen2: the functions the model's layers and the GPU's
recorded decode step (cuda_graph.py) share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

from qwenchat.engine.config import Qwen2Config

LONG_DECODE = 512  # cached positions from which decode_attention beats SDPA (~2x at 3K, slower at 50)


def rope_tables(cfg: Qwen2Config, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for positions 0..length-1, float32, shape (length, head_dim); the first half of
    sin is negated, so rotate_half(x) * sin == x.roll(head_dim // 2, -1) * sin_signed (one copy
    and one fused multiply-add instead of a split, a negation, a concatenation and a product)."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
    t = torch.arange(length, dtype=torch.int64, device=device).float()
    freqs = torch.outer(t, inv_freq)  # (S, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (S, D)
    sin = emb.sin()
    sin[:, : d // 2].neg_()
    return emb.cos(), sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x (..., T, D) rotated by position: transformers' `x * cos + rotate_half(x) * sin`."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), sin_signed)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """One query position against every cached one: q (B, Hq, 1, D), k/v (B, Hkv, S, D);
    `hidden` (S,) bool marks positions to leave out (the recorded GPU step's fixed span).

    Each key/value head serves a group of query heads, so the group's queries become the rows of
    one matrix product against that head's keys: three small ops instead of SDPA's general
    machinery: about 2x faster than SDPA at 3K cached tokens on the CPU, slower below a few
    hundred (LONG_DECODE)."""
    B, hq, _, d = q.shape
    hkv = k.shape[1]
    qg = q.view(B, hkv, hq // hkv, d)  # T == 1: the heads of a group are adjacent rows
    scores = torch.matmul(qg, k.transpose(-1, -2)).mul_(d**-0.5)  # (B, Hkv, G, S)
    if hidden is not None:
        scores = scores.masked_fill(hidden, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(probs, v).view(B, hq, 1, d)


def one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One query position (q (B, Hq, 1, D)) attending to every cached one: decode_attention from
    LONG_DECODE cached positions on, SDPA below."""
    if k.shape[2] >= LONG_DECODE:
        return decode_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1])


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A chunk's queries (B, Hq, T, D) at the end of the keys/values (B, Hkv, S, D), S >= T: query
    i sees keys 0..S-T+i. A first chunk (S == T) is SDPA's is_causal; on top of a cache the mask
    is aligned to the bottom-right corner, which SDPA takes as a CausalBias: the flash and
    memory-efficient GPU kernels skip the hidden keys instead of reading a (T, S) mask (a
    10,971-token prompt in 4,096-token chunks: 3.1x faster on an H200). Those kernels want as many
    key heads as query heads, so the groups are expanded first, as transformers does (a copy per
    chunk, cheap beside its attention). On the CPU (tests only: prompts go layer-major there) SDPA
    builds the mask."""
    T, S, group = q.shape[2], k.shape[2], q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # imported here: torch.nn.attention.bias imports torch._dynamo, 1.5-2 s of every start-up
    from torch.nn.attention.bias import causal_lower_right

    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T, S))


# SDPA's cuDNN backend (torch's first choice on recent NVIDIA GPUs) builds a plan for every new
# shape: 60-750 ms the first time a length is seen (H200, torch 2.11), and decoding sees a new
# length every token: 10-12 tok/s against 52-56 tok/s without it, time to first token 170-380 ms
# against 30-50 ms. The flash and memory-efficient kernels have no per-shape set-up.
ATTENTION_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
