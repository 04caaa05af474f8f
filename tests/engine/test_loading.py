"""Loading a model directory: config and weight validation, each bad input a clear error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwenchat.engine import prefetch
from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.checkpoint import Int8Checkpoint
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.device import choose
from qwenchat.engine.errors import ModelConfigError, SettingsError, WeightsError
from qwenchat.engine.model_build import matrix_keys
from qwenchat.engine.quantize import QTensor


@pytest.fixture
def model_copy(tiny_models, tmp_path) -> Path:
    out = tmp_path / "m"
    shutil.copytree(tiny_models["untied"], out)
    return out


def edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_not_qwen2_is_refused_naming_the_field(model_copy):
    edit_config(model_copy, model_type="llama")
    with pytest.raises(ModelConfigError, match="model_type is 'llama'"):
        ChatEngine.load(model_copy, device="cpu")


def test_unknown_rope_scaling_is_refused(model_copy):
    edit_config(model_copy, rope_scaling={"type": "yarn", "factor": 4.0})
    with pytest.raises(ModelConfigError, match="rope_scaling.rope_type is 'yarn'"):
        ChatEngine.load(model_copy, device="cpu")


def test_config_fields_and_head_dim():
    base = {"model_type": "qwen2", "vocab_size": 10, "hidden_size": 896, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 14, "num_key_value_heads": 2}
    assert Qwen2Config.from_dict(base).head_dim == 64
    assert Qwen2Config.from_dict(base | {"head_dim": 128}).head_dim == 128
    assert Qwen2Config.from_dict(base | {"rope_parameters": {"rope_type": "default", "rope_theta": 5.0}}).rope_theta == 5.0
    with pytest.raises(ModelConfigError, match="hidden_size"):
        Qwen2Config.from_dict(base | {"hidden_size": "x"})


def test_missing_tensor_is_named(model_copy):
    state = load_file(model_copy / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, model_copy / "model.safetensors")
    with pytest.raises(WeightsError, match=r"model.layers.1.mlp.up_proj.weight is missing"):
        ChatEngine.load(model_copy, device="cpu")


def test_misshaped_tensor_is_named(model_copy):
    state = load_file(model_copy / "model.safetensors")
    state["model.norm.weight"] = torch.ones(7)
    save_file(state, model_copy / "model.safetensors")
    with pytest.raises(WeightsError, match=r"model.norm.weight has shape \(7,\)"):
        ChatEngine.load(model_copy, device="cpu")


def test_unexpected_tensor_is_named(model_copy):
    state = load_file(model_copy / "model.safetensors")
    state["model.layers.0.self_attn.o_proj.bias"] = torch.ones(128)
    save_file(state, model_copy / "model.safetensors")
    with pytest.raises(WeightsError, match="unexpected tensor model.layers.0.self_attn.o_proj.bias"):
        ChatEngine.load(model_copy, device="cpu")


def test_truncated_file_is_named(model_copy):
    path = model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(WeightsError, match="model.safetensors"):
        ChatEngine.load(model_copy, device="cpu")


def test_pickle_only_repo_is_refused(model_copy):
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(b"not loaded, never unpickled")
    with pytest.raises(WeightsError, match="safetensors only"):
        ChatEngine.load(model_copy, device="cpu")


def test_sharded_checkpoint_loads_identically(model_copy, tiny_models):
    state = load_file(model_copy / "model.safetensors")
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, model_copy / name)
    (model_copy / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    sharded = ChatEngine.load(model_copy, device="cpu")
    single = ChatEngine.load(tiny_models["untied"], device="cpu")
    for (n1, p1), (n2, p2) in zip(sharded.model.named_parameters(), single.model.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    (model_copy / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsError, match="model-00002-of-00002.safetensors is listed"):
        ChatEngine.load(model_copy, device="cpu")


def test_bf16_checkpoint_is_cast_to_the_compute_dtype(model_copy):
    state = {k: v.to(torch.bfloat16) for k, v in load_file(model_copy / "model.safetensors").items()}
    save_file(state, model_copy / "model.safetensors")
    engine = ChatEngine.load(model_copy, device="cpu", dtype="fp32")
    assert engine.model.lm_head.weight.dtype == torch.float32
    assert ChatEngine.load(model_copy, device="cpu", dtype="bf16").model.lm_head.weight.dtype == torch.bfloat16


def test_device_and_dtype_choice_and_errors():
    p = choose("auto", "auto")
    if not torch.cuda.is_available() and p.device.type == "cpu":
        assert "no GPU" in p.reason and p.dtype == torch.float32
    assert choose("cpu", "auto").dtype == torch.float32
    assert choose("cpu", "bf16").dtype == torch.bfloat16
    with pytest.raises(SettingsError, match="unknown dtype 'int3'"):
        choose("cpu", "int3")
    with pytest.raises(SettingsError, match="unknown device 'tpu'"):
        choose("tpu", "auto")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="no CUDA"):
            choose("cuda", "auto")


# -- the int8 cache read ahead on a thread (prefetch.py) ------------------------------------------


@pytest.fixture
def cache_root(tmp_path) -> Path:
    return tmp_path / "int8-caches"


def _cached_int8(d: Path, root: Path) -> tuple[Qwen2Config, dict]:
    """Write the int8 cache of `d`; returns the config and the tensors as read without a prefetch."""
    cfg = Qwen2Config.from_file(d / "config.json")
    dict(Int8Checkpoint(d, cfg, matrix_keys(cfg), root))
    plain = Int8Checkpoint(d, cfg, matrix_keys(cfg), root)
    tensors = dict(plain)
    assert plain.source == "cache"
    return cfg, tensors


def _equal(a, b) -> bool:
    if isinstance(a, QTensor):
        return torch.equal(a.q, b.q) and torch.equal(a.scale, b.scale)
    return torch.equal(a, b)


def _count_takes(ahead, monkeypatch) -> list:
    served = []
    take = ahead.take

    def counting(begin, end):
        buf = take(begin, end)
        served.append(buf is not None)
        return buf

    monkeypatch.setattr(ahead, "take", counting)
    return served


def test_a_prefetched_int8_cache_serves_every_tensor_unchanged(model_copy, cache_root, monkeypatch):
    cfg, expected = _cached_int8(model_copy, cache_root)
    path = prefetch.int8_cache_path(cache_root, model_copy)
    ahead = prefetch.start(path)
    assert ahead is not None
    served = _count_takes(ahead, monkeypatch)
    ck = Int8Checkpoint(model_copy, cfg, matrix_keys(cfg), cache_root)
    got = dict(ck)
    assert ck.source == "cache" and prefetch.claim(path) is None  # claimed by the checkpoint
    assert served and all(served)  # every tensor came from the prefetch
    assert got.keys() == expected.keys() and all(_equal(got[k], expected[k]) for k in got)
    path.write_bytes(b"\0" * path.stat().st_size)  # private memory: the file no longer matters
    assert all(_equal(got[k], expected[k]) for k in got)


def test_a_prefetch_of_a_replaced_cache_is_not_used(model_copy, cache_root, monkeypatch):
    cfg, _ = _cached_int8(model_copy, cache_root)
    path = prefetch.int8_cache_path(cache_root, model_copy)
    ahead = prefetch.start(path)
    served = _count_takes(ahead, monkeypatch)
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"  # the last float32 of the file becomes 1.0
    new = path.with_name("new")
    new.write_bytes(bytes(data))
    os.replace(new, path)  # another inode, same fingerprint: what a stale prefetch must not serve
    got = dict(Int8Checkpoint(model_copy, cfg, matrix_keys(cfg), cache_root))
    assert not any(served)
    _, expected = _cached_int8(model_copy, cache_root)
    assert all(_equal(got[k], expected[k]) for k in got)


def test_a_prefetch_that_cannot_read_gives_way_to_the_reader(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    ahead = prefetch.start(bad)
    assert ahead is not None and ahead.take(8, 24) is None  # returns at once, never hangs
    assert prefetch.start(tmp_path / "missing") is None
    prefetch.discard(ahead)
    assert prefetch.claim(bad) is None
