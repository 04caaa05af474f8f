"""Weight-only int8: quantization error bounds, the int8 matrix product against float32, the two
int8 paths with torch's kernel (kernel for decode, dequantized for prefill) against each other,
the int8 cache file, and int8 greedy decoding against float32 on the tiny models. Our own kernel
has its tests in test_int8_kernel.py."""

from __future__ import annotations

import os

import pytest
import torch

from qwenchat.engine.cache import KVCache
from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.checkpoint import Int8Checkpoint, iter_checkpoint
from qwenchat.engine.prefetch import int8_cache_path
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.errors import SettingsError
from qwenchat.engine import model_build
from qwenchat.engine.model import Qwen2ForCausalLM
from qwenchat.engine.model_build import matrix_keys
from qwenchat.engine.quantize import Int8Linear, QTensor, Scratch, quantize_int8
from tests.engine.tolerance import EPS32, sum_order_bound, within_sum_order


def _w(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 0.1


def test_round_trip_error_is_within_half_a_step_per_row():
    w = _w(300, 257)
    w[5] = 0.0  # an all-zero row stays zero
    qt = quantize_int8(w)
    assert qt.q.dtype == torch.int8 and qt.q.abs().max() <= 127
    err = (qt.dequantize() - w).abs()
    assert (err <= qt.scale[:, None] / 2 + 1e-7).all()
    assert qt.dequantize()[5].abs().max() == 0
    # scales are exact bfloat16 values (the kernel takes bfloat16 scales) and not below max/127
    assert torch.equal(qt.scale.to(torch.bfloat16).float(), qt.scale)
    assert (qt.scale >= w.abs().amax(1) / 127).all()
    # relative error of a whole row: about 1/254 of its largest element at most
    rel = err.amax(1) / w.abs().amax(1).clamp(min=1e-12)
    assert rel.max() < 1 / 250


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_int8_product_matches_float32_within_bf16_rounding(rows):
    w, b = _w(640, 384, 1), torch.randn(640) * 0.01
    x = torch.randn(rows, 384, generator=torch.Generator().manual_seed(rows))
    lin = Int8Linear(quantize_int8(w), b, Scratch())
    got = lin(x)
    exact_q = x @ lin.qweight.float().t() * lin.scales + b  # same int8 weights, float32 math
    assert (got - exact_q).abs().max() <= 1e-2 * exact_q.abs().max()
    ref = x @ w.t() + b  # the unquantized weights: int8 error on top
    assert (got - ref).abs().max() <= 3e-2 * ref.abs().max()


def test_kernel_path_and_dequantized_path_agree():
    """One row (the int8 kernel) and many rows (dequantized float32 product) compute the same
    function: bfloat16 inputs and outputs, float32 sums."""
    lin = Int8Linear(quantize_int8(_w(512, 256, 2)), None, Scratch())
    x = torch.randn(9, 256, generator=torch.Generator().manual_seed(4))
    batch = lin(x)
    single = torch.cat([lin(x[i : i + 1]) for i in range(9)])
    scale = batch.abs().max()
    assert (batch - single).abs().max() <= 2 * 2**-8 * scale  # at most a rare last-bit difference
    assert (batch - single).abs().mean() <= 1e-4 * scale


def test_exact_top_outputs_are_float32_accurate():
    lin = Int8Linear(quantize_int8(_w(5000, 128, 3)), None, Scratch(), exact_top=16)
    x = torch.randn(1, 128, generator=torch.Generator().manual_seed(5))
    got = lin(x)[0]
    xb = x.bfloat16().float()
    exact = (xb @ lin.qweight.float().t() * lin.scales)[0]
    top = exact.topk(8).indices
    # float32 sums in another order (another product shape), then one rounding of the scaling
    bound = (sum_order_bound(xb, lin.qweight.float()) * lin.scales)[0] + 2 * EPS32 * exact.abs()
    assert within_sum_order(got[top], exact[top], bound[top])
    assert got.argmax() == exact.argmax()


def _load(model_dir, quantize: str, max_len: int = 512) -> tuple[Qwen2ForCausalLM, Qwen2Config]:
    cfg = Qwen2Config.from_file(model_dir / "config.json")
    if quantize == "int8":
        tensors = Int8Checkpoint(model_dir, cfg, matrix_keys(cfg))
    else:
        tensors = iter_checkpoint(model_dir, cfg, torch.float32)
    return model_build.from_tensors(cfg, tensors, torch.device("cpu"), max_len, torch.float32, quantize), cfg


def _cache(cfg: Qwen2Config) -> KVCache:
    return KVCache(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, 512, torch.float32, torch.device("cpu"))


@pytest.mark.parametrize("variant", ["qwen25_05b", "untied"])
def test_int8_greedy_agrees_with_float32_on_most_tokens(tiny_models, tmp_path, variant):
    import shutil

    d = tmp_path / variant
    shutil.copytree(tiny_models[variant], d)
    fp, cfg = _load(d, "none")
    q8, _ = _load(d, "int8")
    prompt = torch.randint(0, 480, (1, 20), generator=torch.Generator().manual_seed(11))
    # free-running float32 greedy, then the int8 model teacher-forced on the same sequence
    cache, logits, seq = _cache(cfg), fp(prompt, _cache(cfg), 0)[0, -1], []
    cache = _cache(cfg)
    logits = fp(prompt, cache, 0)[0, -1]
    for i in range(32):
        seq.append(int(logits.argmax()))
        logits = fp(torch.tensor([[seq[-1]]]), cache, 20 + i)[0, -1]
    cache = _cache(cfg)
    logits = q8(prompt, cache, 0)[0, -1]
    agree = 0
    for i, tok in enumerate(seq):
        agree += int(logits.argmax()) == tok
        logits = q8(torch.tensor([[tok]]), cache, 20 + i)[0, -1]
    assert agree >= 28, f"int8 picked the float32 token {agree}/32 times"


def test_int8_cache_is_written_reused_and_invalidated(tiny_models, tmp_path):
    import shutil

    d, root = tmp_path / "m", tmp_path / "cache"
    shutil.copytree(tiny_models["untied"], d)
    cfg = Qwen2Config.from_file(d / "config.json")
    first = Int8Checkpoint(d, cfg, matrix_keys(cfg), root)
    a = dict(first)
    assert first.source == "quantized, cache written" and int8_cache_path(root, d).is_file()
    second = Int8Checkpoint(d, cfg, matrix_keys(cfg), root)
    b = dict(second)
    assert second.source == "cache" and second.note == ""
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], QTensor):
            assert torch.equal(a[k].q, b[k].q) and torch.equal(a[k].scale, b[k].scale)
        else:
            assert torch.equal(a[k], b[k])
    from safetensors.torch import load_file, save_file

    weights = load_file(d / "model.safetensors")  # "re-downloaded": another model
    save_file({k: v * 2 for k, v in weights.items()}, d / "model.safetensors")
    third = Int8Checkpoint(d, cfg, matrix_keys(cfg), root)
    dict(third)
    assert third.source == "quantized, cache rebuilt (the model's weight files changed)" and third.note == ""
    int8_cache_path(root, d).write_bytes(b"garbage")  # a damaged cache is rebuilt, not fatal
    fourth = Int8Checkpoint(d, cfg, matrix_keys(cfg), root)
    dict(fourth)
    assert fourth.source.startswith("quantized, cache rebuilt (damaged") and "rebuilt" in fourth.note
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # the model folder stays as it was


def test_int8_without_a_writable_directory_still_loads(tiny_models, tmp_path):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache directory would go")
    engine = ChatEngine.load(tiny_models["untied"], device="cpu", quantize="int8", int8_cache_dir=blocked)
    assert engine.info.quantize == "int8" and "not cached" in engine.info.placement_reason
    no_root = ChatEngine.load(tiny_models["untied"], device="cpu", quantize="int8")
    assert "not cached (no cache folder)" in no_root.info.placement_reason


def test_engine_quantize_option_and_reason(tiny_model):
    e = ChatEngine.load(tiny_model, device="cpu", quantize="int8")
    assert e.info.quantize == "int8" and "weights: int8 weights, as requested" in e.info.placement_reason
    assert ChatEngine.load(tiny_model, device="cpu", quantize="none").info.quantize == "none"
    auto = ChatEngine.load(tiny_model, device="cpu")  # a tiny model keeps exact weights by default
    assert auto.info.quantize == "none" and "small model" in auto.info.placement_reason
    assert ChatEngine.load(tiny_model, device="cpu", dtype="float32").info.quantize == "none"
    with pytest.raises(SettingsError, match="quantize mode 'int3'"):
        ChatEngine.load(tiny_model, device="cpu", quantize="int3")


def test_int8_default_for_large_models_on_cpu(monkeypatch):
    from qwenchat.engine.device import choose, choose_quantize

    cpu = choose("cpu", "auto")
    assert choose_quantize("auto", cpu, "auto", 500_000_000)[0] == "int8"
    assert choose_quantize(None, cpu, None, 500_000_000)[0] == "int8"
    assert choose_quantize("auto", cpu, "bf16", 500_000_000)[0] == "none"  # an explicit dtype is honoured
    assert choose_quantize("auto", cpu, "auto", 1_000_000)[0] == "none"


def test_int8_reuse_path_matches_a_fresh_prefill(tiny_model):
    """The prompt fed token by token (kernel path) and in one piece (dequantized path) give the
    same next-token choice and nearly the same logits."""
    engine = ChatEngine.load(tiny_model, device="cpu", quantize="int8")
    m, cfg = engine.model, engine.model.config
    ids = torch.randint(0, 480, (1, 40), generator=torch.Generator().manual_seed(2))
    fresh = m(ids, _cache(cfg), 0)[0, -1]
    cache = _cache(cfg)
    m(ids[:, :30], cache, 0)
    for i in range(30, 40):
        step = m(ids[:, i : i + 1], cache, i)[0, -1]
    assert int(step.argmax()) == int(fresh.argmax())
    assert (step - fresh).abs().max() <= 2e-2 * fresh.abs().max()


def test_scratch_dequantizes_a_weight_once_while_its_slot_holds_it(monkeypatch):
    """A long prompt's MLP applies gate/up and down to one row block after another: each slot
    keeps its weight, so neither is dequantized again; another weight, or the same one changed
    in place, is."""
    fills = []
    real = Scratch._fill
    monkeypatch.setattr(Scratch, "_fill", lambda self, q, s, w: fills.append(q.shape[0]) or real(self, q, s, w))
    a, b = quantize_int8(_w(64, 32, 1)), quantize_int8(_w(48, 32, 2))
    scratch = Scratch()
    for _ in range(3):
        wa = scratch.dequantize(a.q, a.scale, torch.float32, slot=0)
        wb = scratch.dequantize(b.q, b.scale, torch.float32, slot=1)
        assert torch.equal(wa, a.dequantize()) and torch.equal(wb, b.dequantize())
    assert fills == [64, 48]
    scratch.dequantize(b.q, b.scale, torch.float32, slot=0)  # evicts a from slot 0
    assert torch.equal(scratch.dequantize(a.q, a.scale, torch.float32, slot=0), a.dequantize())
    a.q[0, 0] = -a.q[0, 0] if a.q[0, 0] else 1
    assert torch.equal(scratch.dequantize(a.q, a.scale, torch.float32, slot=0), a.dequantize())
    assert fills == [64, 48, 48, 64, 64]


@pytest.mark.parametrize("rows", [1, 3, 40, 300])
def test_linear_products_into_out_equal_fresh_ones(rows):
    """`out=` (a reused buffer) gives the same values as a fresh result, on every int8 path
    (torch's kernel for few rows, the dequantized product for many) and the float Linear."""
    from qwenchat.engine.model import Linear

    w, b = _w(200, 96, 5), torch.randn(200)
    x = torch.randn(1, rows, 96, generator=torch.Generator().manual_seed(rows))
    for lin in (Int8Linear(quantize_int8(w), b, Scratch()), Int8Linear(quantize_int8(w), None, Scratch()), Linear(w, b)):
        want = lin(x)
        out = torch.full((1, rows, 200), float("nan"))
        got = lin(x, out=out)
        assert got.data_ptr() == out.data_ptr() and torch.equal(got, want)
