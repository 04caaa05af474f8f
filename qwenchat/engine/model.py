"""The Qwen2 network: embeddings, decoder layers (RMSNorm, RoPE attention with GQA and q/k/v
bias, SwiGLU MLP), final norm and output projection.

Numerics follow transformers' modeling_qwen2.py: RMSNorm in float32, RoPE tables in float32 cast
to the activation dtype, "rotate_half" layout, logits in float32.

Loading is the one place that knows the checkpoint's layout. `from_tensors` takes (key, tensor)
pairs with the checkpoint's names (`model.layers.0.self_attn.q_proj.weight`), one at a time, and
builds each layer as soon as its tensors have arrived: q/k/v are fused into one `qkv_proj` and
gate/up into one `gate_up_proj` (one matrix product instead of three or two), tied embeddings
share one tensor with the output projection. Nothing is initialised and then overwritten. With
`quantize="int8"` every matrix (and the embedding table) is held as int8 with per-row scales
(quantize.py), with `quantize="int4"` as group-wise int4 (quantize_int4.py; `weight_kinds` says
which matrix takes which); activations, norms, biases, the KV cache and logits stay in the
compute dtype.

Three ways through the layers, computing the same function up to the order of float sums (and,
on CPUs with bfloat16 matrix units, a prompt's quantized products rounded to bfloat16:
quantize.py):
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

import re
import threading
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel

from qwenchat.engine.attention import (
    ATTENTION_BACKENDS, apply_rope, chunk_attention, decode_attention, one_query_attention, rope_tables,
)
from qwenchat.engine.cache import KVCache
from qwenchat.engine.cuda_graph import GraphDecoder
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine import prefill_blocks as blocks
from qwenchat.engine.fused_decode import FusedDecoder
from qwenchat.engine.prefill_blocks import PrefillCancelled, Workspace, block_mask, blocked_attention
from qwenchat.engine.int8_kernel import Int8Kernel
from qwenchat.engine.quantize import Int8Embedding, Int8Linear, QTensor, Scratch, cat_rows, quantize_int8
from qwenchat.engine import quantize_int4 as q4
from qwenchat.engine.quantize_int4 import Int4Embedding, Int4Linear, Q4Tensor
from qwenchat.engine.int4_head import KIND as HEAD_KIND
from qwenchat.engine.int4_head import HeadWeights, Int4Head

# writes a layer's new keys/values (B, Hkv, T, D) and returns the keys/values to attend to
Store = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# The largest logits recomputed more exactly: in float32 by int8 mode's torch kernel (quantize.py),
# from the int8 rows by int4 mode's output projection (int4_head.py).
EXACT_TOP_LOGITS = 64
QUANTIZED = ("none", "int8", "int4")  # the weight formats from_tensors builds
# int4 mode's embedding: int8, because int4 there costs quality. Measured on the real test model
# (benchmarks/int4_quality.py): perplexity 1.059x float32's and 2 of 5 greedy replies equal with
# it int8, 1.075x and 1 of 5 with it int4. Its output projection: int4 for decoding with the
# largest logits from the int8 rows (int4_head.KIND), which keeps int8's choices.
INT4_EMBEDDING = "int8"
INT4_OUTPUT = HEAD_KIND
# int4 mode's attention q/k/v projections: int8. They are 7% of a layer's weights (so ~3% of a
# decode step's bytes), and int4 there costs the most: perplexity 1.040x float32's with them int8
# against 1.058x all int4 (o_proj int8 too: 1.038x; down_proj int8 instead: 1.053x).
INT4_QKV = "int8"
_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")
_LAYER_PARTS = (
    "input_layernorm.weight", "post_attention_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
)  # fmt: skip


def matrix_keys(cfg: Qwen2Config) -> frozenset[str]:
    """The checkpoint keys of every 2-D weight (what int8 mode quantizes)."""
    keys = {"model.embed_tokens.weight"} | ({"lm_head.weight"} if not cfg.tie_word_embeddings else set())
    for n in range(cfg.num_hidden_layers):
        keys |= {f"model.layers.{n}.{p}" for p in _LAYER_PARTS if p.endswith("proj.weight")}
    return frozenset(keys)


def weight_kinds(cfg: Qwen2Config, quantize: str, int4_kernel: bool = True) -> dict[str, str]:
    """Checkpoint key -> "int8", "int4" or "int8+int4" for every matrix a quantize mode stores
    quantized: int8 mode, all of them int8; int4 mode, the layers' matrices int4 but q/k/v
    (INT4_QKV), the embedding INT4_EMBEDDING and the output projection INT4_OUTPUT (when tied, the
    embedding is the output projection: INT4_OUTPUT, whose int8 rows serve the lookups).
    Without qwenchat's kernel (`int4_kernel` False: another device, no compiler) nothing would
    stream an int4 copy of the output projection, so it is INT4_EMBEDDING's format alone."""
    if quantize == "none":
        return {}
    kinds = {k: quantize for k in matrix_keys(cfg)}
    if quantize == "int4":
        kinds |= {k: INT4_QKV for k in kinds if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))}
        kinds["model.embed_tokens.weight"] = INT4_EMBEDDING
        output = "int8" if INT4_OUTPUT == HEAD_KIND and not int4_kernel else INT4_OUTPUT  # the int8 rows alone
        kinds["model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"] = output
    return kinds


def matrix_params(cfg: Qwen2Config) -> int:
    """How many parameters the 2-D weights hold (a tied embedding counted once)."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * i
    return cfg.num_hidden_layers * per_layer + cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)


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

    def forward(self, x, cos, sin, cache: KVCache, layer: int, pos: int, last_only: bool = False) -> torch.Tensor:
        """last_only: keys/values of every position go to the cache, but only the last position
        attends (its output is all a prompt's final layer needs)."""
        return self.attend_with(x, cos, sin, lambda k, v: cache.update(layer, pos, k, v), None, last_only)

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
        self, x, cos, sin, cache: KVCache, layer: int, pos: int, q_out: torch.Tensor, ws: Workspace
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
        return cache.update(layer, pos, qk[:, hq:], qkv[:, hq + hkv :])

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

    def forward(self, x, cos, sin, cache: KVCache, layer: int, pos: int, last_only: bool = False) -> torch.Tensor:
        """last_only: returns the last position only (see Attention.forward)."""
        return self.step_with(x, cos, sin, lambda k, v: cache.update(layer, pos, k, v), None, last_only)

    def step_with(self, x, cos, sin, store: Store, hidden: torch.Tensor | None = None,
                  last_only: bool = False) -> torch.Tensor:  # fmt: skip
        """forward() with the attention's keys/values stored by `store` (Attention.attend_with)."""
        attn = self.self_attn.attend_with(self.input_layernorm(x), cos, sin, store, hidden, last_only)
        x = (x[:, -1:] if last_only else x) + attn
        return x + self.mlp(self.post_attention_layernorm(x))

    def prefill(self, x, cos, sin, cache: KVCache, layer: int, pos: int, mask: torch.Tensor | None, ws: Workspace) -> None:
        """forward() for every position of a prompt chunk at positions pos.., updating x (B, T, H)
        in place. Attention is one pass over all rows (one SDPA call, or a few query blocks on top
        of a cache); everything else goes in row blocks into reused buffers, so memory is bounded
        (the MLP's (rows, 2I) temporary is the largest) and nothing page-faults per layer. Each
        int8 weight is dequantized once for all blocks: o, gate/up and down, used in turn, hold
        separate scratch slots (quantize.Scratch)."""
        q, k, v = self._project(x, cos, sin, cache, layer, pos, ws)
        y = self.self_attn.attend(q, k, v, mask, ws)  # (B, T, Hq*D)
        for a, b in blocks.row_blocks(x.shape[1]):
            rows = x[:, a:b]
            rows += self.self_attn.o_proj(y[:, a:b], out=ws.get("o", x, x.shape[0], b - a, x.shape[2]))
            rows += self.mlp.blocked(self.post_attention_layernorm(rows), ws)

    def prefill_last(self, x, cos, sin, cache: KVCache, layer: int, pos: int, ws: Workspace) -> torch.Tensor:
        """The final layer of a last_only prompt chunk: keys/values of every row to the cache (in
        row blocks, like prefill()), the rest for the last row only -> (B, 1, H); what
        forward(last_only=True) computes, without its chunk-sized temporaries."""
        q, k, v = self._project(x, cos, sin, cache, layer, pos, ws)
        y = one_query_attention(q[:, :, -1:], k, v)  # (B, Hq, 1, D)
        B, hq, _, d = y.shape
        h = x[:, -1:] + self.self_attn.o_proj(y.transpose(1, 2).reshape(B, 1, hq * d))
        return h + self.mlp(self.post_attention_layernorm(h))

    def _project(self, x, cos, sin, cache: KVCache, layer: int, pos: int, ws: Workspace) -> tuple[torch.Tensor, ...]:
        """Keys/values of a chunk's rows to the cache, in row blocks -> rotated queries (B, Hq, T,
        D) in `ws` and the cache's keys/values 0..pos+T (B, Hkv, pos+T, D)."""
        B, T, _ = x.shape
        attn = self.self_attn
        q = ws.get("q", x, B, attn.n_heads, T, attn.head_dim)
        for a, b in blocks.row_blocks(T):
            kv = attn.project(self.input_layernorm(x[:, a:b]), cos[a:b], sin[a:b], cache, layer, pos + a, q[:, :, a:b], ws)
        return q, *kv  # the last block's update returns keys/values 0..pos+T


class Backbone(nn.Module):
    """`model.*` in the checkpoint: embeddings, layers, final norm."""

    def __init__(self, embed_tokens: nn.Module, layers: list[DecoderLayer], norm: RMSNorm) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.layers = nn.ModuleList(layers)
        self.norm = norm


class _Builder:
    """Turns checkpoint tensors into modules: float or int8 matrices, fused where possible."""

    def __init__(
        self, cfg: Qwen2Config, device: torch.device, dtype: torch.dtype, quantize: str, native: Int8Kernel | None,
        amx_prompts: bool = False,
    ) -> None:
        self.cfg, self.device, self.dtype, self.quantize = cfg, device, dtype, quantize
        self.native = native if dtype == torch.float32 and device.type == "cpu" else None  # float32 rows, CPU
        self.kinds = weight_kinds(cfg, quantize, self.native is not None)
        self.scratch = Scratch(self.native, amx_prompts)

    def tensor(self, key: str, value: torch.Tensor | QTensor | Q4Tensor | HeadWeights):
        kind = self.kinds.get(key)
        if kind is not None and isinstance(value, torch.Tensor):
            value = self._quantized(value, kind)
        if isinstance(value, HeadWeights) and self.native is None:
            value = value.exact  # nothing here streams the int4 copy (see weight_kinds)
        if isinstance(value, (QTensor, Q4Tensor, HeadWeights)):
            return value.to(self.device)
        return value.to(device=self.device, dtype=self.dtype)

    def _quantized(self, w: torch.Tensor, kind: str) -> QTensor | Q4Tensor | HeadWeights:
        if kind == HEAD_KIND:
            return HeadWeights(quantize_int8(w), q4.quantize_int4(w, native=self.native))
        return quantize_int8(w) if kind == "int8" else q4.quantize_int4(w, native=self.native)

    def linear(self, weights: list, biases: list | None = None, exact_top: int = 0, slot: int = 0) -> nn.Module:
        """slot: the int8 scratch slot; matrices applied in turn to a prompt's row blocks (o, gate/up,
        down) take different ones, so each is dequantized once per prompt chunk."""
        bias = None if biases is None else torch.cat(biases) if len(biases) > 1 else biases[0]
        if isinstance(weights[0], HeadWeights):  # the output projection, alone (`tensor` keeps it only with the kernel)
            exact = Int8Linear(weights[0].exact, bias, self.scratch, exact_top, self.native, slot)
            return Int4Head(Int4Linear(weights[0].fast, bias, self.scratch, self.native, slot), exact, exact_top)
        if isinstance(weights[0], QTensor):
            weight = cat_rows(weights) if len(weights) > 1 else weights[0]
            return Int8Linear(weight, bias, self.scratch, exact_top, self.native, slot)
        if isinstance(weights[0], Q4Tensor):
            return Int4Linear(q4.cat_rows(weights) if len(weights) > 1 else weights[0], bias, self.scratch, self.native, slot)
        return Linear(torch.cat(weights) if len(weights) > 1 else weights[0], bias)

    def embedding(self, weight: torch.Tensor | QTensor | Q4Tensor | HeadWeights) -> nn.Module:
        if isinstance(weight, HeadWeights):
            weight = weight.exact  # the lookups take the int8 rows, shared with the output projection
        if isinstance(weight, Q4Tensor):
            return Int4Embedding(weight, self.dtype)
        return Int8Embedding(weight, self.dtype) if isinstance(weight, QTensor) else Embedding(weight)

    def layer(self, t: dict[str, torch.Tensor | QTensor]) -> DecoderLayer:
        eps = self.cfg.rms_norm_eps
        a, m = "self_attn.", "mlp."
        qkv = self.linear([t[a + "q_proj.weight"], t[a + "k_proj.weight"], t[a + "v_proj.weight"]],
                          [t[a + "q_proj.bias"], t[a + "k_proj.bias"], t[a + "v_proj.bias"]])  # fmt: skip
        prompt_dtype = torch.bfloat16 if self.scratch.amx_prompts else None
        attn = Attention(self.cfg, qkv, self.linear([t[a + "o_proj.weight"]], slot=2), prompt_dtype)
        gate_up = self.linear([t[m + "gate_proj.weight"], t[m + "up_proj.weight"]])
        mlp = MLP(gate_up, self.linear([t[m + "down_proj.weight"]], slot=1))
        return DecoderLayer(RMSNorm(t["input_layernorm.weight"], eps), attn, RMSNorm(t["post_attention_layernorm.weight"], eps), mlp)


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

    @classmethod
    def from_state_dict(
        cls,
        cfg: Qwen2Config,
        state: Mapping[str, torch.Tensor],
        device: torch.device,
        max_len: int,
        quantize: str = "none",
    ) -> "Qwen2ForCausalLM":
        """A model from a whole state dict (float tensors in the compute dtype)."""
        dtype = state["model.embed_tokens.weight"].dtype
        return cls.from_tensors(cfg, state.items(), device, max_len, dtype, quantize)

    @classmethod
    def from_tensors(
        cls,
        cfg: Qwen2Config,
        tensors: Iterable[tuple[str, torch.Tensor | QTensor]],
        device: torch.device,
        max_len: int,
        dtype: torch.dtype,
        quantize: str = "none",
        native: Int8Kernel | None = None,
        amx_prompts: bool = False,
    ) -> "Qwen2ForCausalLM":
        """A model from checkpoint-named tensors arriving one at a time (float tensors are cast to
        `dtype`; with quantize="int8" matrices are quantized unless they arrive as QTensors, and
        `native` is the int8 kernel for decoding, None for torch's). amx_prompts: quantized
        prompt products on the CPU's matrix units (device.amx_prompts)."""
        if quantize not in QUANTIZED:
            raise ValueError(f"unknown quantize mode {quantize!r}")
        b = _Builder(cfg, device, dtype, quantize, native, amx_prompts)
        pending: dict[int, dict] = {}
        layers: dict[int, DecoderLayer] = {}
        top: dict[str, torch.Tensor | QTensor] = {}
        for key, value in tensors:
            if cfg.tie_word_embeddings and key == "lm_head.weight":
                continue  # a tied checkpoint's copy of the embedding; unused
            value = b.tensor(key, value)
            match = _LAYER_KEY.fullmatch(key)
            if match is None:
                top[key] = value
                continue
            n, part = int(match.group(1)), match.group(2)
            pending.setdefault(n, {})[part] = value
            if len(pending[n]) == len(_LAYER_PARTS):
                layers[n] = b.layer(pending.pop(n))  # the parts are freed as soon as fused
        need = {"model.embed_tokens.weight", "model.norm.weight"} | (set() if cfg.tie_word_embeddings else {"lm_head.weight"})
        missing = sorted(need - set(top)) + [f"model.layers.{n}.*" for n in range(cfg.num_hidden_layers) if n not in layers]
        if missing:
            raise ValueError(f"checkpoint tensors missing: {', '.join(missing[:3])}")
        embed = b.embedding(top["model.embed_tokens.weight"])
        if cfg.tie_word_embeddings:  # one tensor, not a copy
            w = top["model.embed_tokens.weight"]
            lm_head = b.linear([w], exact_top=EXACT_TOP_LOGITS)
        else:
            lm_head = b.linear([top["lm_head.weight"]], exact_top=EXACT_TOP_LOGITS)
        backbone = Backbone(embed, [layers[n] for n in range(cfg.num_hidden_layers)], RMSNorm(top["model.norm.weight"], cfg.rms_norm_eps))
        model = cls(cfg, backbone, lm_head, dtype, quantize)
        model.eval().requires_grad_(False)
        cos, sin = rope_tables(cfg, max_len, device)
        model.rope_cos, model.rope_sin = cos.to(dtype), sin.to(dtype)
        if native is not None and FusedDecoder.supports(model):
            model.fused = FusedDecoder(native, model)
        if GraphDecoder.supports(device, quantize):
            model.graphs = GraphDecoder(model)
        return model

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
            for i, layer in enumerate(self.model.layers):
                x = layer(x, cos, sin, cache, i, pos, last_only and i == last)
            return self.model.norm(x)

    def _prefill(self, x, cos, sin, cache: KVCache, pos: int, last_only: bool, cancel: threading.Event | None) -> torch.Tensor:
        """Every layer over all of the chunk's rows before the next (x (B, T, H), updated in place;
        see DecoderLayer.prefill), with one Workspace for all layers. The final layer of a
        last_only chunk computes keys/values for every row, the rest for the last (prefill_last)."""
        ws = Workspace()
        T = x.shape[1]
        mask = block_mask(pos, T, min(T, blocks.QUERY_BLOCK), x.dtype, x.device) if pos > 0 else None
        last = len(self.model.layers) - 1
        for i, layer in enumerate(self.model.layers):
            if cancel is not None and cancel.is_set():
                raise PrefillCancelled
            if last_only and i == last:  # the last position's output only (see forward's last_only)
                return layer.prefill_last(x, cos, sin, cache, i, pos, ws)
            layer.prefill(x, cos, sin, cache, i, pos, mask, ws)
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
