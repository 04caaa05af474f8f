"""The Qwen2 network: embeddings, decoder layers (RMSNorm, RoPE attention with GQA and q/k/v
bias, SwiGLU MLP), final norm and output projection.

Attribute names equal the checkpoint keys (`model.layers.0.self_attn.q_proj.weight`), so a state
dict loads with no rename table. Numerics follow transformers' modeling_qwen2.py: RMSNorm in
float32, RoPE tables in float32 cast to the activation dtype, "rotate_half" layout, logits in
float32. The model is built on the meta device and receives its weights with `assign=True`, so
start-up never initialises parameters it is about to overwrite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwenchat.engine.cache import KVCache
from qwenchat.engine.config import Qwen2Config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_tables(cfg: Qwen2Config, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for positions 0..length-1, float32, shape (length, head_dim)."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
    t = torch.arange(length, dtype=torch.int64, device=device).float()
    freqs = torch.outer(t, inv_freq)  # (S, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (S, D)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        d = cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * d, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * d, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv_heads * d, bias=True)
        self.o_proj = nn.Linear(self.n_heads * d, cfg.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H)
        cos: torch.Tensor,  # (T, D), activation dtype
        sin: torch.Tensor,
        cache: KVCache,
        layer: int,
        pos: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, Hq, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = cache.update(layer, pos, k, v)  # (B, Hkv, pos+T, D)
        # T == 1 attends to everything cached; a first prefill is plainly causal; a prefill on top
        # of a cache needs the explicit mask (SDPA's is_causal aligns to the top-left corner).
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=(T > 1 and pos == 0), enable_gqa=self.n_heads != self.n_kv_heads
        )  # (B, Hq, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache: KVCache, layer: int, pos: int, mask) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, pos, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """`model.*` in the checkpoint: embeddings, layers, final norm."""

    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rope_cos: torch.Tensor | None = None
        self.rope_sin: torch.Tensor | None = None

    @classmethod
    def from_state_dict(
        cls, cfg: Qwen2Config, state: dict[str, torch.Tensor], device: torch.device, max_len: int
    ) -> "Qwen2ForCausalLM":
        with torch.device("meta"):
            model = cls(cfg)
        if cfg.tie_word_embeddings:
            state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
        model.load_state_dict(state, assign=True, strict=True)
        if cfg.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight  # one tensor, not a copy
        model.to(device)
        model.eval().requires_grad_(False)
        cos, sin = rope_tables(cfg, max_len, device)
        dtype = model.model.embed_tokens.weight.dtype
        model.rope_cos, model.rope_sin = cos.to(dtype), sin.to(dtype)
        return model

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: KVCache, pos: int, last_only: bool = True) -> torch.Tensor:
        """input_ids (1, T) at positions pos..pos+T-1 -> float32 logits (1, 1 or T, V).

        Writes the new keys/values into `cache`; the caller records the ids in `cache.tokens`.
        """
        T = input_ids.shape[1]
        x = self.model.embed_tokens(input_ids)  # (B, T, H)
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, D)
        mask = None
        if T > 1 and pos > 0:
            # query i (absolute position pos+i) sees keys 0..pos+i
            rows = torch.arange(pos, pos + T, device=x.device)[:, None]
            mask = torch.arange(pos + T, device=x.device)[None, :] <= rows  # (T, pos+T)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, cache, i, pos, mask)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.model.norm(x)).float()
