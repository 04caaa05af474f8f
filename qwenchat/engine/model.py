"""The Qwen2 network: embeddings, decoder layers (RMSNorm, RoPE attention with GQA and q/k/v
bias, SwiGLU MLP), final norm and output projection.

Numerics follow transformers' modeling_qwen2.py: RMSNorm in float32, RoPE tables in float32 cast
to the activation dtype, "rotate_half" layout, logits in float32.

Built from checkpoint tensors by model_build.py (which also picks each matrix's format and
attaches the decode strategies below); this module is the network alone.

Three ways through the layers, computing the same function up to the order of float sums (and,
on CPUs with AMX, a prompt's quantized products from rows rounded to int8 and its attention in
bfloat16: quantize.py, native/int8_prompts.c, `Attention.prompt_dtype`):
- a decode step of an int8 model on the CPU with qwenchat's kernel: one C call for all layers
  (fused_decode.py, native/decode_step.c);
- another decode step, and any call off the CPU: each module's forward() on the whole input;
- a prompt chunk on the CPU: layer-major (`_prefill`, `DecoderLayer.prefill`, prefill_blocks.py):
  each layer over all of the chunk's rows before the next, attention in one causal SDPA call
  (query blocks on top of a cache), the projections and MLP in row blocks into buffers reused
  across layers, so memory stays bounded, no product page-faults a fresh output, and each int8
  weight is dequantized once per chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel

from qwenchat.engine.attention import (
    ATTENTION_BACKENDS, apply_rope, chunk_attention, decode_attention, one_query_attention,
)
from qwenchat.engine.cache import KVCache, LayerCache
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine import prefill_blocks as blocks
from qwenchat.engine.prefill_blocks import PrefillCancelled, Workspace, block_mask, blocked_attention

if TYPE_CHECKING:  # attached by model_build.py
    from qwenchat.engine.cuda_graph import GraphDecoder
    from qwenchat.engine.fused_decode import FusedDecoder

# writes a layer's new keys/values (B, Hkv, T, D) and returns the keys/values to attend to
Store = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # one fused op, same arithmetic
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class Linear(nn.Module):
    """y = x W^T + b with W (N, K) in the compute dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., K) -> (..., N); `out` (contiguous, that shape) receives the result (what
        F.linear computes: addmm with the bias, mm without)."""
        if out is None:
            return F.linear(x, self.weight, self.bias)
        x2, y = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])  # (M, K), (M, N)
        if self.bias is None:
            torch.mm(x2, self.weight.t(), out=y)
        else:
            torch.addmm(self.bias, x2, self.weight.t(), out=y)
        return out


class Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class Attention(nn.Module):
    def __init__(
        self, cfg: Qwen2Config, qkv_proj: nn.Module, o_proj: nn.Module, prompt_dtype: torch.dtype | None = None
    ) -> None:
        """prompt_dtype: a prompt chunk's attention (`attend`) runs in it, the cache keeps its own
        (bfloat16 on CPUs with matrix units: 2.7x faster there at 1.7-3.4K tokens)."""
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.qkv_proj = qkv_proj  # rows: q (Hq*D), k (Hkv*D), v (Hkv*D)
        self.o_proj = o_proj
        self.prompt_dtype = prompt_dtype

    def forward(self, x, cos, sin, kv: LayerCache, pos: int, last_only: bool = False) -> torch.Tensor:
        """last_only: keys/values of every position go to the cache, but only the last position
        attends (its output is all a prompt's final layer needs)."""
        return self.attend_with(x, cos, sin, partial(kv.update, pos), None, last_only)

    def attend_with(self, x, cos, sin, store: Store, hidden: torch.Tensor | None = None,
                    last_only: bool = False) -> torch.Tensor:  # fmt: skip
        """forward() with the keys/values written by `store(k, v)`, which returns the cache's keys
        and values to attend to; `hidden` (S,) bool leaves those positions out of one query's
        attention (the recorded GPU step's fixed span, cuda_graph.py)."""
        B, T, _ = x.shape
        hq, hkv, d = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv_proj(x).view(B, T, hq + 2 * hkv, d).transpose(1, 2)  # (B, Hq+2Hkv, T, D)
        qk = apply_rope(qkv[:, : hq + hkv], cos, sin)  # q and k rotate together
        q, k = qk[:, :hq], qk[:, hq:]  # (B, Hq, T, D), (B, Hkv, T, D)
        k, v = store(k, qkv[:, hq + hkv :])  # (B, Hkv, S, D)
        if last_only:
            q, T = q[:, :, -1:], 1
        if hidden is not None:
            y = decode_attention(q, k, v, hidden)
        else:
            y = one_query_attention(q, k, v) if T == 1 else chunk_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, hq * d))

    def project(
        self, x, cos, sin, kv: LayerCache, pos: int, q_out: torch.Tensor, ws: Workspace
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows at positions pos.. of a prompt chunk (x (B, b, H), normalized): their keys/values
        to the cache, their rotated queries to q_out (B, Hq, b, D); returns the cache's keys and
        values 0..pos+b, each (B, Hkv, pos+b, D)."""
        B, T, _ = x.shape
        hq, hkv, d = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv_proj(x, out=ws.get("qkv", x, B, T, (hq + 2 * hkv) * d))
        qkv = qkv.view(B, T, hq + 2 * hkv, d).transpose(1, 2)  # (B, Hq+2Hkv, b, D)
        qk = apply_rope(qkv[:, : hq + hkv], cos, sin)  # q and k rotate together
        q_out.copy_(qk[:, :hq])
        return kv.update(pos, qk[:, hq:], qkv[:, hq + hkv :])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, ws: Workspace) -> torch.Tensor:
        """A prompt chunk's queries q (B, Hq, T, D) against the cache's keys/values 0..pos+T ->
        (B, T, Hq*D) in `ws`, before o_proj. A first chunk (mask None) is one causal SDPA call,
        which skips the masked half; a chunk on top of a cache takes blocked_attention."""
        B, hq, T, d = q.shape
        out = ws.get("attn", q, B, T, hq, d)
        if self.prompt_dtype is not None:
            q, k, v = q.to(self.prompt_dtype), k.to(self.prompt_dtype), v.to(self.prompt_dtype)
            mask = None if mask is None else mask.to(self.prompt_dtype)
        if mask is None:
            out.copy_(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hq != k.shape[1]).transpose(1, 2))
        else:
            blocked_attention(q, k, v, mask, out)
        return out.view(B, T, hq * d)


class MLP(nn.Module):
    def __init__(self, gate_up_proj: nn.Module, down_proj: nn.Module) -> None:
        super().__init__()
        self.gate_up_proj = gate_up_proj  # rows: gate (I), up (I)
        self.down_proj = down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # (B, T, 2I)
        i = gate_up.shape[-1] // 2
        return self.down_proj(F.silu(gate_up[..., :i]) * gate_up[..., i:])

    def blocked(self, x: torch.Tensor, ws: Workspace) -> torch.Tensor:
        """forward() for a block of prompt rows, with its temporaries (and result, valid until
        the next block) in `ws`; silu and the product run in place in the gate/up buffer."""
        gate_up = self.gate_up_proj(x, out=ws.get("gate_up", x, *x.shape[:-1], self.gate_up_proj.out_features))
        i = gate_up.shape[-1] // 2
        h = F.silu(gate_up[..., :i], inplace=True).mul_(gate_up[..., i:])  # (B, rows, I), strided
        return self.down_proj(h, out=ws.get("down", x, *x.shape))


class DecoderLayer(nn.Module):
    def __init__(self, input_layernorm: RMSNorm, self_attn: Attention, post_attention_layernorm: RMSNorm, mlp: MLP) -> None:
        super().__init__()
        self.input_layernorm, self.self_attn = input_layernorm, self_attn
        self.post_attention_layernorm, self.mlp = post_attention_layernorm, mlp

    def forward(self, x, cos, sin, kv: LayerCache, pos: int, last_only: bool = False) -> torch.Tensor:
        """last_only: returns the last position only (see Attention.forward)."""
        return self.step_with(x, cos, sin, partial(kv.update, pos), None, last_only)

    def step_with(self, x, cos, sin, store: Store, hidden: torch.Tensor | None = None,
                  last_only: bool = False) -> torch.Tensor:  # fmt: skip
        """forward() with the attention's keys/values stored by `store` (Attention.attend_with)."""
        attn = self.self_attn.attend_with(self.input_layernorm(x), cos, sin, store, hidden, last_only)
        x = (x[:, -1:] if last_only else x) + attn
        return x + self.mlp(self.post_attention_layernorm(x))

    def prefill(self, x, cos, sin, kv: LayerCache, pos: int, mask: torch.Tensor | None, ws: Workspace) -> None:
        """forward() for every position of a prompt chunk at positions pos.., updating x (B, T, H)
        in place. Attention is one pass over all rows (one SDPA call, or a few query blocks on top
        of a cache); everything else goes in row blocks into reused buffers, so memory is bounded
        (the MLP's (rows, 2I) temporary is the largest) and nothing page-faults per layer. Each
        int8 weight is dequantized once for all blocks: o, gate/up and down, used in turn, hold
        separate scratch slots (quantize.Scratch)."""
        q, k, v = self._project(x, cos, sin, kv, pos, ws)
        y = self.self_attn.attend(q, k, v, mask, ws)  # (B, T, Hq*D)
        for a, b in blocks.row_blocks(x.shape[1]):
            rows = x[:, a:b]
            rows += self.self_attn.o_proj(y[:, a:b], out=ws.get("o", x, x.shape[0], b - a, x.shape[2]))
            rows += self.mlp.blocked(self.post_attention_layernorm(rows), ws)

    def prefill_last(self, x, cos, sin, kv: LayerCache, pos: int, ws: Workspace) -> torch.Tensor:
        """The final layer of a last_only prompt chunk: keys/values of every row to the cache (in
        row blocks, like prefill()), the rest for the last row only -> (B, 1, H); what
        forward(last_only=True) computes, without its chunk-sized temporaries."""
        q, k, v = self._project(x, cos, sin, kv, pos, ws)
        y = one_query_attention(q[:, :, -1:], k, v)  # (B, Hq, 1, D)
        B, hq, _, d = y.shape
        h = x[:, -1:] + self.self_attn.o_proj(y.transpose(1, 2).reshape(B, 1, hq * d))
        return h + self.mlp(self.post_attention_layernorm(h))

    def _project(self, x, cos, sin, kv: LayerCache, pos: int, ws: Workspace) -> tuple[torch.Tensor, ...]:
        """Keys/values of a chunk's rows to the cache, in row blocks -> rotated queries (B, Hq, T,
        D) in `ws` and the cache's keys/values 0..pos+T (B, Hkv, pos+T, D)."""
        B, T, _ = x.shape
        attn = self.self_attn
        q = ws.get("q", x, B, attn.n_heads, T, attn.head_dim)
        for a, b in blocks.row_blocks(T):
            keys_values = attn.project(self.input_layernorm(x[:, a:b]), cos[a:b], sin[a:b], kv, pos + a, q[:, :, a:b], ws)
        return q, *keys_values  # the last block's update returns keys/values 0..pos+T


class Backbone(nn.Module):
    """`model.*` in the checkpoint: embeddings, layers, final norm."""

    def __init__(self, embed_tokens: nn.Module, layers: list[DecoderLayer], norm: RMSNorm) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.layers = nn.ModuleList(layers)
        self.norm = norm


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen2Config, model: Backbone, lm_head: nn.Module, dtype: torch.dtype, quantize: str) -> None:
        super().__init__()
        self.config = cfg
        self.model = model
        self.lm_head = lm_head
        self.dtype, self.quantize = dtype, quantize
        self.rope_cos: torch.Tensor | None = None
        self.rope_sin: torch.Tensor | None = None
        self.fused: FusedDecoder | None = None  # the C decode step (int8, float32, our kernel)
        self.graphs: GraphDecoder | None = None  # recorded decode steps (a CUDA GPU, float weights)

    @torch.inference_mode()
    def hidden(
        self, input_ids: torch.Tensor, cache: KVCache, pos: int, last_only: bool = False, cancel: threading.Event | None = None
    ) -> torch.Tensor:
        """input_ids (1, T) at positions pos..pos+T-1 -> final-norm hidden states (1, T, H), or
        (1, 1, H) for the last position with `last_only`: the final layer then runs its attention
        output and MLP for that position alone (what the next token needs; about 1/24 of a long
        prompt's work on a 24-layer model).

        Writes the new keys/values of every position into `cache`; the caller records the ids in
        `cache.tokens`. On the CPU a prompt chunk (T > 1) runs layer-major (`_prefill`), and a set
        `cancel` stops it between layers by raising PrefillCancelled.
        """
        T = input_ids.shape[1]
        x = self.model.embed_tokens(input_ids)  # (B, T, H)
        if T == 1 and self.fused is not None:
            return self.model.norm(self.fused.step(x, cache, pos))
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, D)
        with sdpa_kernel(list(ATTENTION_BACKENDS)):
            if T > 1 and blocks.layer_major(x.device):
                return self.model.norm(self._prefill(x, cos, sin, cache, pos, last_only, cancel))
            last = len(self.model.layers) - 1
            for i, (layer, kv) in enumerate(zip(self.model.layers, cache.layers)):
                x = layer(x, cos, sin, kv, pos, last_only and i == last)
            return self.model.norm(x)

    def _prefill(self, x, cos, sin, cache: KVCache, pos: int, last_only: bool, cancel: threading.Event | None) -> torch.Tensor:
        """Every layer over all of the chunk's rows before the next (x (B, T, H), updated in place;
        see DecoderLayer.prefill), with one Workspace for all layers. The final layer of a
        last_only chunk computes keys/values for every row, the rest for the last (prefill_last)."""
        ws = Workspace()
        T = x.shape[1]
        mask = block_mask(pos, T, min(T, blocks.QUERY_BLOCK), x.dtype, x.device) if pos > 0 else None
        last = len(self.model.layers) - 1
        for i, (layer, kv) in enumerate(zip(self.model.layers, cache.layers)):
            if cancel is not None and cancel.is_set():
                raise PrefillCancelled
            if last_only and i == last:  # the last position's output only (see forward's last_only)
                return layer.prefill_last(x, cos, sin, kv, pos, ws)
            layer.prefill(x, cos, sin, kv, pos, mask, ws)
        return x

    @torch.inference_mode()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, H) -> float32 logits (B, T, V)."""
        return self.lm_head(h).float()

    @torch.inference_mode()
    def forward(
        self, input_ids: torch.Tensor, cache: KVCache, pos: int, last_only: bool = True, cancel: threading.Event | None = None
    ) -> torch.Tensor:
        """input_ids (1, T) at positions pos..pos+T-1 -> float32 logits (1, 1 or T, V)."""
        if input_ids.shape[1] == 1 and self.graphs is not None:
            logits = self.graphs.step(input_ids, cache, pos)
            if logits is not None:
                return logits
        return self.logits(self.hidden(input_ids, cache, pos, last_only, cancel))
