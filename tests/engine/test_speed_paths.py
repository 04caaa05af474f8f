"""The shape of the fast paths: fused projections, torch's int8 kernel on decode steps only, no
attention mask built per decode step, and weights read into private memory (not mapped)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

import qwenchat.engine.model as model_mod
from qwenchat.engine.cache import KVCache
from qwenchat.engine.checkpoint import Int8Checkpoint, iter_checkpoint
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.model import Qwen2ForCausalLM, matrix_keys


def _load(d, quantize="none"):
    cfg = Qwen2Config.from_file(d / "config.json")
    src = Int8Checkpoint(d, cfg, matrix_keys(cfg)) if quantize == "int8" else iter_checkpoint(d, cfg, torch.float32)
    return Qwen2ForCausalLM.from_tensors(cfg, src, torch.device("cpu"), 256, torch.float32, quantize), cfg


def _cache(cfg):
    return KVCache(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, 256, torch.float32, torch.device("cpu"))


def test_qkv_and_gate_up_are_fused_from_the_checkpoint_tensors(tiny_models):
    d = tiny_models["untied"]
    m, cfg = _load(d)
    state = load_file(d / "model.safetensors")
    for n, layer in enumerate(m.model.layers):
        p = f"model.layers.{n}."
        assert not hasattr(layer.self_attn, "q_proj") and not hasattr(layer.mlp, "gate_proj")
        qkv = torch.cat([state[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        assert torch.equal(layer.self_attn.qkv_proj.weight, qkv)
        assert torch.equal(layer.self_attn.qkv_proj.bias, torch.cat([state[p + f"self_attn.{x}_proj.bias"] for x in "qkv"]))
        gate_up = torch.cat([state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]])
        assert torch.equal(layer.mlp.gate_up_proj.weight, gate_up)


def test_int8_kernel_runs_for_decode_steps_and_the_last_prompt_row_only(tiny_models, tmp_path, monkeypatch):
    d = tmp_path / "m"
    shutil.copytree(tiny_models["qwen25_05b"], d)
    m, cfg = _load(d, "int8")
    calls = []
    real = torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda x, w, s: calls.append(x.shape[0]) or real(x, w, s))
    cache = _cache(cfg)
    m(torch.arange(40).view(1, 40), cache, 0)
    # prefill: dequantized products, but the final layer's o/gate_up/down and the output
    # projection run for the last row only
    assert calls == [1, 1, 1, 1]
    calls.clear()
    m(torch.tensor([[7]]), cache, 40)
    assert calls == [1] * (3 * cfg.num_hidden_layers + 1 + cfg.num_hidden_layers)  # qkv, o, gate_up, down; head


def test_a_decode_step_builds_no_attention_mask(tiny_models, monkeypatch):
    m, cfg = _load(tiny_models["qwen2_15b"])
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((q.shape[2], attn_mask is None))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(model_mod.F, "scaled_dot_product_attention", spy)
    cache = _cache(cfg)
    m(torch.arange(10).view(1, 10), cache, 0)
    m(torch.tensor([[3]]), cache, 10)
    n = cfg.num_hidden_layers
    assert seen[:n] == [(10, True)] * (n - 1) + [(1, True)]  # first prefill: is_causal; the final layer: last row
    assert seen[cfg.num_hidden_layers :] == [(1, True)] * cfg.num_hidden_layers


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_weights_are_read_into_private_memory_not_mapped(tiny_models, tmp_path, quantize):
    """A mapped checkpoint would count in the resident size as its pages are touched and would
    change under the model if the file changed; read weights do neither."""
    d = tmp_path / "m"
    shutil.copytree(tiny_models["untied"], d)
    m, cfg = _load(d, quantize)
    ids = torch.arange(12).view(1, 12)
    before = m(ids, _cache(cfg), 0)
    path = d / "model.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as f:  # overwrite the tensor data in place (same inode)
        f.seek(size // 2)
        f.write(b"\x00" * (size - size // 2))
    assert torch.equal(m(ids, _cache(cfg), 0), before)
