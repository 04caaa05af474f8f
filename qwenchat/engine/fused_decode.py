"""The CPU decode step in one foreign call (native/decode_step.c), for int8 models with float32
activations and qwenchat's int8 kernel.

A decode step through model.py's modules runs ~500 small torch ops around the int8 matrix
products; on a 2-core CPU their dispatch costs about a quarter of the step. `FusedDecoder` hands
the C step pointers to the model's own tensors (no copies: the int8 weights, scales, biases and
norm weights stay where the model holds them) and to the KV cache, so one call runs every layer.

What it does not do: the embedding lookup, the final norm and the output projection stay in
torch (one op each). Prompts (T > 1) and every other device or dtype take the torch path.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch

from qwenchat.engine.cache import KVCache
from qwenchat.engine.int8_kernel import Int8Kernel
from qwenchat.engine.quantize import Int8Linear
from qwenchat.engine.quantize_int4 import Int4Linear

if TYPE_CHECKING:  # for the annotations only: model_build.py attaches us to the model
    from qwenchat.engine.model import DecoderLayer, Qwen2ForCausalLM

_p, _i64 = ctypes.c_void_p, ctypes.c_int64


class _Matrix(ctypes.Structure):
    _fields_ = [("w", _p), ("scale", _p), ("bias", _p), ("rows", _i64), ("cols", _i64),
                ("low", _p), ("group", _i64), ("bits", _i64)]  # fmt: skip


class _Layer(ctypes.Structure):
    _fields_ = [("input_norm", _p), ("post_attention_norm", _p),
                ("qkv", _Matrix), ("o", _Matrix), ("gate_up", _Matrix), ("down", _Matrix)]  # fmt: skip


class _Model(ctypes.Structure):
    _fields_ = [("n_layers", _i64), ("hidden", _i64), ("n_heads", _i64), ("n_kv_heads", _i64),
                ("head_dim", _i64), ("intermediate", _i64), ("eps", ctypes.c_float),
                ("layers", ctypes.POINTER(_Layer))]  # fmt: skip


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _matrix(linear: Int8Linear | Int4Linear) -> _Matrix:
    if isinstance(linear, Int4Linear):
        w = linear.weight4
        return _Matrix(_ptr(w.q), _ptr(w.scale), _ptr(linear.bias), w.q.shape[0], w.cols, _ptr(w.low), w.group, 4)
    rows, cols = linear.qweight.shape
    return _Matrix(_ptr(linear.qweight), _ptr(linear.scales), _ptr(linear.bias), rows, cols, None, 0, 8)


class FusedDecoder:
    def __init__(self, kernel: Int8Kernel, model: Qwen2ForCausalLM) -> None:
        """Only for models `supports` accepts; holds pointers into `model`, which must outlive it."""
        cfg, lib = model.config, kernel.lib
        self._step, self._work_floats = lib.qc_decode_step, lib.qc_decode_work_floats
        self._step.restype = None
        self._step.argtypes = [ctypes.POINTER(_Model), _p, _p, _p, _i64, _i64, _p, _p, _p]
        self._work_floats.restype = _i64
        self._work_floats.argtypes = [ctypes.POINTER(_Model), _i64]
        layers = model.model.layers
        self._layers = (_Layer * len(layers))(*(self._layer(layer) for layer in layers))
        self._model = _Model(len(layers), cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                             cfg.head_dim, cfg.intermediate_size, cfg.rms_norm_eps, self._layers)  # fmt: skip
        self._cos, self._sin = model.rope_cos, model.rope_sin
        self._work, self._work_len = torch.empty(0), -1

    @staticmethod
    def supports(model: Qwen2ForCausalLM) -> bool:
        """int8 or int4 matrices on the CPU with float32 activations, all on our kernel."""
        if model.dtype != torch.float32 or model.quantize not in ("int8", "int4"):
            return False
        mods = [m for layer in model.model.layers for m in (layer.self_attn.qkv_proj, layer.self_attn.o_proj,
                                                           layer.mlp.gate_up_proj, layer.mlp.down_proj)]  # fmt: skip
        return all(isinstance(m, (Int8Linear, Int4Linear)) and m.native is not None for m in mods)

    @staticmethod
    def _layer(layer: DecoderLayer) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        return _Layer(_ptr(layer.input_layernorm.weight), _ptr(layer.post_attention_layernorm.weight),
                      _matrix(attn.qkv_proj), _matrix(attn.o_proj), _matrix(mlp.gate_up_proj), _matrix(mlp.down_proj))  # fmt: skip

    def step(self, x: torch.Tensor, cache: KVCache, pos: int) -> torch.Tensor:
        """x (1, 1, H) float32: the embedded token at position `pos`, run through every layer in
        place (its keys/values written into `cache` at `pos`); returns x."""
        max_len = cache.max_len
        if self._work_len != max_len:  # scratch for that cache's length, sized by the C side
            self._work = torch.empty(self._work_floats(ctypes.byref(self._model), max_len), dtype=torch.float32)
            self._work_len = max_len
        x = x.contiguous()
        # ctypes releases the GIL for the call: the UI thread runs while the token computes
        self._step(ctypes.byref(self._model), x.data_ptr(), cache.k.data_ptr(), cache.v.data_ptr(), max_len, pos,
                   self._cos[pos].data_ptr(), self._sin[pos].data_ptr(), self._work.data_ptr())  # fmt: skip
        return x
