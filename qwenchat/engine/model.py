"""The Qwen2 network: embeddings, decoder layers (RMSNorm, RoPE attention with GQA and q/k/v
bias, SwiGLU MLP), final norm and output projection.

Numerics follow transformers' modeling_qwen2.py: RMSNorm in float32, RoPE tables in float32 cast
to the activation dtype, "rotate_half" layout, logits in float32.

Built from checkpoint tensors by model_build.py (which also picks each matrix's format and
attaches the decode strategies below); this module is the network alone.

Each module has one call, forward(). `Qwen2ForCausalLM.hidden` picks one of three ways through
the layers, computing the same function up to the order of float sums (and, on CPUs with AMX, a
prompt's quantized products from rows rounded to int8 and its attention in bfloat16: quantize.py,
native/int8_prompts.c, `Attention.prompt_dtype`):
- a decode step of an int8/int4 model on the CPU with qwenchat's kernel: one C call for all
  layers (fused_decode.py, native/decode_step.c);
- a prompt chunk on the CPU: layer-major (layer_major.py), each layer over all of the chunk's rows
  before the next in bounded row blocks;
- anything else (another decode step, any call off the CPU): each layer's forward() in turn.
  A CUDA GPU replays recorded decode steps of these same forward()s (cuda_graph.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel

from qwenchat.engine.attention import (
    ATTENTION_BACKENDS, apply_rope, chunk_attention, decode_attention, one_query_attention,
)
from qwenchat.engine.cache import KVCache
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine import layer_major

if TYPE_CHECKING:  # attached by model_build.py
    from qwenchat.engine.cuda_graph import GraphDecoder
    from qwenchat.engine.fused_decode import FusedDecoder



class KVWriter(Protocol):
    """Where a layer's keys/values go: cache.LayerCache, or the recorded GPU step's fixed span
    (cuda_graph.py)."""

    unwritten: torch.Tensor | None  # (S,) bool: positions of the span one query must not see

    def update(self, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, Hkv, T, D) at positions pos.. -> the keys/values to attend to."""
        ...


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
        """prompt_dtype: a prompt chunk's attention runs in it (layer_major.py), the cache keeps its
        own (bfloat16 on CPUs with matrix units: 2.7x faster there at 1.7-3.4K tokens)."""
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.qkv_proj = qkv_proj  # rows: q (Hq*D), k (Hkv*D), v (Hkv*D)
        self.o_proj = o_proj
        self.prompt_dtype = prompt_dtype

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: KVWriter, pos: int,
                last_only: bool = False) -> torch.Tensor:  # fmt: skip
        """x (B, T, H) normalized, at positions pos..: its keys/values go to `kv`, its queries
        attend to what kv.update returns. last_only: only the last position attends (its output
        is all a prompt's final layer needs)."""
        B, T, _ = x.shape
        qk, v = self.rotated(self.qkv_proj(x), cos, sin)
        q = qk[:, : self.n_heads]  # (B, Hq, T, D)
        k, v = kv.update(pos, qk[:, self.n_heads :], v)  # (B, Hkv, S, D)
        if last_only:
            q, T = q[:, :, -1:], 1
        if kv.unwritten is not None:
            y = decode_attention(q, k, v, kv.unwritten)
        else:
            y = one_query_attention(q, k, v) if T == 1 else chunk_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))

    def rotated(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """qkv_proj's output (B, T, (Hq+2Hkv)*D) -> queries and keys rotated together (B, Hq+Hkv,
        T, D) and the values (B, Hkv, T, D)."""
        B, T, _ = qkv.shape
        qkv = qkv.view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, Hq+2Hkv, T, D)
        split = self.n_heads + self.n_kv_heads
        return apply_rope(qkv[:, :split], cos, sin), qkv[:, split:]


class MLP(nn.Module):
    def __init__(self, gate_up_proj: nn.Module, down_proj: nn.Module) -> None:
        super().__init__()
        self.gate_up_proj = gate_up_proj  # rows: gate (I), up (I)
        self.down_proj = down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # (B, T, 2I)
        i = gate_up.shape[-1] // 2
        return self.down_proj(F.silu(gate_up[..., :i]) * gate_up[..., i:])


class DecoderLayer(nn.Module):
    def __init__(self, input_layernorm: RMSNorm, self_attn: Attention, post_attention_layernorm: RMSNorm, mlp: MLP) -> None:
        super().__init__()
        self.input_layernorm, self.self_attn = input_layernorm, self_attn
        self.post_attention_layernorm, self.mlp = post_attention_layernorm, mlp

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: KVWriter, pos: int,
                last_only: bool = False) -> torch.Tensor:  # fmt: skip
        """last_only: returns the last position only (see Attention.forward)."""
        attn = self.self_attn(self.input_layernorm(x), cos, sin, kv, pos, last_only)
        x = (x[:, -1:] if last_only else x) + attn
        return x + self.mlp(self.post_attention_layernorm(x))


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
        `cache.tokens`. On the CPU a prompt chunk (T > 1) runs layer-major (layer_major.py), and a
        set `cancel` stops it between layers by raising PrefillCancelled.
        """
        T = input_ids.shape[1]
        x = self.model.embed_tokens(input_ids)  # (B, T, H)
        if T == 1 and self.fused is not None:
            return self.model.norm(self.fused.step(x, cache, pos))
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, D)
        with sdpa_kernel(list(ATTENTION_BACKENDS)):
            if T > 1 and layer_major.runs_on(x.device):
                return self.model.norm(layer_major.prefill(self, x, cos, sin, cache, pos, last_only, cancel))
            last = len(self.model.layers) - 1
            for i, (layer, kv) in enumerate(zip(self.model.layers, cache.layers)):
                x = layer(x, cos, sin, kv, pos, last_only and i == last)
            return self.model.norm(x)

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
