"""Building the Qwen2 network (model.py) from checkpoint tensors: the one place that knows the
checkpoint's layout and which format each matrix takes.

`from_tensors` takes (key, tensor) pairs with the checkpoint's names
(`model.layers.0.self_attn.q_proj.weight`), one at a time, and builds each layer as soon as its
tensors have arrived: q/k/v are fused into one `qkv_proj` and gate/up into one `gate_up_proj` (one
matrix product instead of three or two), tied embeddings share one tensor with the output
projection. Nothing is initialised and then overwritten. With `quantize="int8"` every matrix (and
the embedding table) is held as int8 with per-row scales (quantize.py), with `quantize="int4"` as
group-wise int4 (quantize_int4.py; `weight_kinds` says which matrix takes which); activations,
norms, biases, the KV cache and logits stay in the compute dtype. It also attaches the decode
strategies the device allows: the C decode step (fused_decode.py) for an int8/int4 model with
qwenchat's kernel, recorded CUDA graphs (cuda_graph.py) for float weights on a CUDA GPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from qwenchat.engine import quantize_int4 as q4
from qwenchat.engine.attention import rope_tables
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.cuda_graph import GraphDecoder
from qwenchat.engine.fused_decode import FusedDecoder
from qwenchat.engine.int4_head import KIND as HEAD_KIND
from qwenchat.engine.int4_head import HeadWeights, Int4Head
from qwenchat.engine.int8_kernel import Int8Kernel
from qwenchat.engine.model import (
    MLP, Attention, Backbone, DecoderLayer, Embedding, Linear, Qwen2ForCausalLM, RMSNorm,
)
from qwenchat.engine.quantize import Int8Embedding, Int8Linear, QTensor, Scratch, cat_rows, quantize_int8
from qwenchat.engine.quantize_int4 import Int4Embedding, Int4Linear, Q4Tensor

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


class _Builder:
    """Turns checkpoint tensors into modules: float, int8 or int4 matrices, fused where possible."""

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


def from_state_dict(
    cfg: Qwen2Config,
    state: Mapping[str, torch.Tensor],
    device: torch.device,
    max_len: int,
    quantize: str = "none",
) -> Qwen2ForCausalLM:
    """A model from a whole state dict (float tensors in the compute dtype)."""
    dtype = state["model.embed_tokens.weight"].dtype
    return from_tensors(cfg, state.items(), device, max_len, dtype, quantize)


def from_tensors(
    cfg: Qwen2Config,
    tensors: Iterable[tuple[str, torch.Tensor | QTensor]],
    device: torch.device,
    max_len: int,
    dtype: torch.dtype,
    quantize: str = "none",
    native: Int8Kernel | None = None,
    amx_prompts: bool = False,
) -> Qwen2ForCausalLM:
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
    model = Qwen2ForCausalLM(cfg, backbone, lm_head, dtype, quantize)
    model.eval().requires_grad_(False)
    cos, sin = rope_tables(cfg, max_len, device)
    model.rope_cos, model.rope_sin = cos.to(dtype), sin.to(dtype)
    if native is not None and FusedDecoder.supports(model):
        model.fused = FusedDecoder(native, model)
    if GraphDecoder.supports(device, quantize):
        model.graphs = GraphDecoder(model)
    return model
