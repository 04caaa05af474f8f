"""Layer-major prefill: how a prompt chunk runs through the network on the CPU.

Each layer goes over all of the chunk's rows before the next: attention in one causal SDPA call
(query blocks on top of a cache), the projections and MLP in row blocks into buffers reused across
layers (`Workspace`), so memory stays bounded (the MLP's (rows, 2I) temporary is the largest), no
product page-faults a fresh output, and each int8 weight is dequantized once per chunk (o,
gate/up and down, used in turn, hold separate scratch slots: quantize.Scratch). It computes the
function of the modules' forward() (model.py) up to the order of float sums, from their weights;
`Qwen2ForCausalLM.hidden` chooses it for prompt chunks where `runs_on` says so.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from qwenchat.engine.attention import one_query_attention
from qwenchat.engine.cache import KVCache, LayerCache

if TYPE_CHECKING:
    from qwenchat.engine.model import Attention, DecoderLayer, Qwen2ForCausalLM

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


def runs_on(device: torch.device) -> bool:
    """Whether prompt chunks run layer-major (`prefill`): on the CPU, where it was measured; other
    devices keep the plain per-layer forward()."""
    return device.type == "cpu"


def prefill(model: Qwen2ForCausalLM, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, pos: int,
            last_only: bool, cancel: threading.Event | None) -> torch.Tensor:  # fmt: skip
    """The layers over a prompt chunk's embeddings x (B, T, H) at positions pos.. (updated in
    place) -> the last layer's output, (B, 1, H) with `last_only`: that layer then computes
    keys/values for every row and the rest for the last (`_last_layer`). A set `cancel` stops the
    chunk between layers (PrefillCancelled)."""
    ws = Workspace()
    T = x.shape[1]
    mask = block_mask(pos, T, min(T, QUERY_BLOCK), x.dtype, x.device) if pos > 0 else None
    layers = model.model.layers
    for i, (layer, kv) in enumerate(zip(layers, cache.layers)):
        if cancel is not None and cancel.is_set():
            raise PrefillCancelled
        if last_only and i == len(layers) - 1:
            return _last_layer(layer, x, cos, sin, kv, pos, ws)
        _layer(layer, x, cos, sin, kv, pos, mask, ws)
    return x


def _layer(layer: DecoderLayer, x, cos, sin, kv: LayerCache, pos: int, mask: torch.Tensor | None, ws: Workspace) -> None:
    """DecoderLayer.forward() for every row of the chunk, x updated in place."""
    attn, mlp = layer.self_attn, layer.mlp
    q, k, v = _project(layer, x, cos, sin, kv, pos, ws)
    y = _attend(attn, q, k, v, mask, ws)  # (B, T, Hq*D)
    for a, b in row_blocks(x.shape[1]):
        rows = x[:, a:b]
        rows += attn.o_proj(y[:, a:b], out=ws.get("o", x, x.shape[0], b - a, x.shape[2]))
        h = layer.post_attention_layernorm(rows)
        gate_up = mlp.gate_up_proj(h, out=ws.get("gate_up", h, *h.shape[:-1], mlp.gate_up_proj.out_features))
        i = gate_up.shape[-1] // 2
        act = F.silu(gate_up[..., :i], inplace=True).mul_(gate_up[..., i:])  # in the gate/up buffer
        rows += mlp.down_proj(act, out=ws.get("down", h, *h.shape))


def _last_layer(layer: DecoderLayer, x, cos, sin, kv: LayerCache, pos: int, ws: Workspace) -> torch.Tensor:
    """The final layer of a last_only chunk: keys/values of every row to the cache (in row blocks),
    the rest for the last row only -> (B, 1, H); what forward(last_only=True) computes, without
    its chunk-sized temporaries."""
    q, k, v = _project(layer, x, cos, sin, kv, pos, ws)
    y = one_query_attention(q[:, :, -1:], k, v)  # (B, Hq, 1, D)
    B, hq, _, d = y.shape
    h = x[:, -1:] + layer.self_attn.o_proj(y.transpose(1, 2).reshape(B, 1, hq * d))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _project(layer: DecoderLayer, x, cos, sin, kv: LayerCache, pos: int, ws: Workspace) -> tuple[torch.Tensor, ...]:
    """Keys/values of a chunk's rows to the cache, in row blocks -> rotated queries (B, Hq, T, D)
    in `ws` and the cache's keys/values 0..pos+T (B, Hkv, pos+T, D)."""
    B, T, _ = x.shape
    attn = layer.self_attn
    q = ws.get("q", x, B, attn.n_heads, T, attn.head_dim)
    for a, b in row_blocks(T):
        h = layer.input_layernorm(x[:, a:b])
        qkv = attn.qkv_proj(h, out=ws.get("qkv", h, B, b - a, attn.qkv_proj.out_features))
        qk, v = attn.rotated(qkv, cos[a:b], sin[a:b])
        q[:, :, a:b] = qk[:, : attn.n_heads]
        keys_values = kv.update(pos + a, qk[:, attn.n_heads :], v)
    return q, *keys_values  # the last block's update returns keys/values 0..pos+T


def _attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
            ws: Workspace) -> torch.Tensor:  # fmt: skip
    """A chunk's queries q (B, Hq, T, D) against the cache's keys/values 0..pos+T -> (B, T, Hq*D)
    in `ws`, before o_proj, in the attention's prompt_dtype. A first chunk (mask None) is one
    causal SDPA call, which skips the masked half; a chunk on top of a cache takes
    blocked_attention."""
    B, hq, T, d = q.shape
    out = ws.get("attn", q, B, T, hq, d)
    if attn.prompt_dtype is not None:
        q, k, v = q.to(attn.prompt_dtype), k.to(attn.prompt_dtype), v.to(attn.prompt_dtype)
        mask = None if mask is None else mask.to(attn.prompt_dtype)
    if mask is None:
        out.copy_(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hq != k.shape[1]).transpose(1, 2))
    else:
        blocked_attention(q, k, v, mask, out)
    return out.view(B, T, hq * d)


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
