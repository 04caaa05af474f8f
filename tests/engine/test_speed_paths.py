"""The shape of the fast paths: fused projections, torch's int8 kernel on decode steps only, no
attention mask built per decode step, weights read into private memory (not mapped), and a long
prompt's layer-major prefill (one attention call per layer, the MLP in row blocks into reused
buffers, each int8 matrix dequantized once per layer)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

import qwenchat.engine.model as model_mod
from qwenchat.engine import layer_major
from qwenchat.engine.cache import KVCache
from qwenchat.engine.checkpoint import Int8Checkpoint, iter_checkpoint
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine import model_build
from qwenchat.engine.model import Qwen2ForCausalLM
from qwenchat.engine.model_build import matrix_keys


def _load(d, quantize="none", max_len=256):
    cfg = Qwen2Config.from_file(d / "config.json")
    src = Int8Checkpoint(d, cfg, matrix_keys(cfg)) if quantize == "int8" else iter_checkpoint(d, cfg, torch.float32)
    return model_build.from_tensors(cfg, src, torch.device("cpu"), max_len, torch.float32, quantize), cfg


def _cache(cfg, max_len=256):
    return KVCache(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, max_len, torch.float32, torch.device("cpu"))


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


def _spy_sdpa(monkeypatch) -> list:
    """(queries, keys, mask shape or None, is_causal) of every SDPA call."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        seen.append((q.shape[2], k.shape[2], None if attn_mask is None else tuple(attn_mask.shape), is_causal))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(model_mod.F, "scaled_dot_product_attention", spy)
    return seen


def test_a_long_prompt_attends_once_per_layer_or_in_query_blocks_on_a_cache(tiny_models, monkeypatch):
    """A first prompt: one causal SDPA call per layer over all of its rows (the masked half is
    skipped). A prompt on top of a cache: query blocks of at most QUERY_BLOCK rows, each against
    the keys up to its last position with a block-sized mask. The last layer: the last position
    only."""
    monkeypatch.setattr(layer_major, "QUERY_BLOCK", 128)
    seen = _spy_sdpa(monkeypatch)
    m, cfg = _load(tiny_models["qwen2_15b"], max_len=1024)
    cache = _cache(cfg, 1024)
    m(torch.arange(300).view(1, 300), cache, 0)
    assert seen == [(300, 300, None, True), (1, 300, None, False)]
    seen.clear()
    m(torch.arange(200).view(1, 200), cache, 300)
    assert seen == [(100, 400, (100, 400), False), (100, 500, (100, 500), False), (1, 500, None, False)]


def test_a_long_prompt_runs_the_mlp_in_row_blocks_into_one_reused_buffer(tiny_models, monkeypatch):
    monkeypatch.setattr(layer_major, "ROW_BLOCK", 128)
    m, cfg = _load(tiny_models["qwen2_15b"], max_len=1024)
    rows, ptrs = [], set()
    for layer in m.model.layers:
        layer.mlp.gate_up_proj.register_forward_hook(lambda mod, args, y: rows.append(args[0].shape[1]) or ptrs.add(y.data_ptr()))
    m.hidden(torch.arange(300).view(1, 300), _cache(cfg, 1024), 0, last_only=False)
    assert rows == [100, 100, 100] * cfg.num_hidden_layers  # near-equal blocks of at most 128 rows
    assert len(ptrs) == 1  # every block of every layer wrote the same buffer


def test_a_last_only_prompt_projects_keys_and_values_in_row_blocks_in_its_final_layer_too(tiny_models, monkeypatch):
    """The final layer needs every row's keys/values but only the last row's output: its q/k/v
    products go in row blocks like the other layers' (no chunk-sized temporaries), the rest
    takes one row."""
    monkeypatch.setattr(layer_major, "ROW_BLOCK", 128)
    m, cfg = _load(tiny_models["qwen2_15b"], max_len=1024)
    qkv_rows, mlp_rows = [], []
    for layer in m.model.layers:
        layer.self_attn.qkv_proj.register_forward_pre_hook(lambda mod, args: qkv_rows.append(args[0].shape[1]))
        layer.mlp.gate_up_proj.register_forward_pre_hook(lambda mod, args: mlp_rows.append(args[0].shape[1]))
    m(torch.arange(300).view(1, 300), _cache(cfg, 1024), 0)
    assert qkv_rows == [100, 100, 100] * cfg.num_hidden_layers
    assert mlp_rows == [100, 100, 100] * (cfg.num_hidden_layers - 1) + [1]


def test_a_long_prompt_dequantizes_each_int8_matrix_once_per_layer(tiny_models, tmp_path, monkeypatch):
    """qkv, o, gate/up and down once per layer however many row blocks the prompt has; the last
    layer of a last-only prompt dequantizes qkv only (its other products take one row)."""
    from qwenchat.engine.quantize import Scratch

    monkeypatch.setattr(layer_major, "ROW_BLOCK", 128)
    d = tmp_path / "m"
    shutil.copytree(tiny_models["qwen2_15b"], d)
    m, cfg = _load(d, "int8", max_len=1024)
    fills = []
    real = Scratch._fill
    monkeypatch.setattr(Scratch, "_fill", lambda self, q, s, w: fills.append(tuple(q.shape)) or real(self, q, s, w))
    m(torch.arange(300).view(1, 300), _cache(cfg, 1024), 0)
    layer = m.model.layers[0]
    per_layer = [tuple(p.qweight.shape) for p in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj)]
    assert fills == per_layer * (cfg.num_hidden_layers - 1) + per_layer[:1]
