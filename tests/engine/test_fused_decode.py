"""The fused C decode step (native/decode_step.c via fused_decode.py) computes what the torch modules
compute: the same logits and the same cached keys/values, at any position and thread count."""

from __future__ import annotations

import pytest
import torch

from qwenchat.engine import int8_kernel
from qwenchat.engine.cache import KVCache
from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.attention import LONG_DECODE
from qwenchat.engine.model import Qwen2ForCausalLM
from tests.engine.test_int8_kernel import needs_kernel

VARIANTS = ["qwen25_05b", "qwen2_15b", "untied"]


@pytest.fixture(scope="module")
def kernel_dir(shared_kernels_dir):
    return shared_kernels_dir  # the session's kernel (tests/conftest.py), built once


@pytest.fixture(scope="module")
def models(tiny_models):
    """The shared tiny models: loaded without an int8 cache folder, nothing is written to them."""
    return {name: tiny_models[name] for name in VARIANTS}


def _engine(models, variant: str, kernel_dir) -> ChatEngine:
    return ChatEngine.load(models[variant], device="cpu", quantize="int8", kernel_dir=kernel_dir)


def _cache(model: Qwen2ForCausalLM, max_len: int = 1024) -> KVCache:
    cfg = model.config
    return KVCache(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, max_len, torch.float32, torch.device("cpu"))


def _copy(cache: KVCache) -> KVCache:
    n_layers, _, n_kv_heads, _, head_dim = cache.k.shape  # (L, B, Hkv, S, D)
    out = KVCache(n_layers, n_kv_heads, head_dim, cache.max_len, cache.k.dtype, cache.k.device)
    out.k.copy_(cache.k)
    out.v.copy_(cache.v)
    return out


def _decode_both(model: Qwen2ForCausalLM, prompt: torch.Tensor, steps: torch.Tensor):
    """Prefill `prompt` once, then feed `steps` one token at a time from copies of that cache,
    fused and through the torch modules; returns both logits sequences and both caches. One
    prefill serves both, so only the decode steps are compared (a prefill's matrix products may
    sum in another order from one call to the next on some CPUs)."""
    fused, out = model.fused, []
    prefilled = _cache(model)
    model(prompt, prefilled, 0)
    pos = prompt.shape[1]
    for use in (fused, None):
        model.fused = use
        cache = _copy(prefilled)
        out.append(([model(steps[:, i : i + 1], cache, pos + i) for i in range(steps.shape[1])], cache))
    model.fused = fused
    return out


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prompt_len", [5, LONG_DECODE + 61])  # below/above decode_attention's threshold
def test_fused_step_equals_the_torch_modules(models, kernel_dir, variant, prompt_len):
    model = _engine(models, variant, kernel_dir).model
    assert model.fused is not None
    g = torch.Generator().manual_seed(prompt_len)
    prompt, steps = torch.randint(0, 400, (1, prompt_len), generator=g), torch.randint(0, 400, (1, 70), generator=g)
    (fused_logits, fused_cache), (ref_logits, ref_cache) = _decode_both(model, prompt, steps)
    for got, want in zip(fused_logits, ref_logits):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    end = prompt_len + steps.shape[1]
    assert torch.allclose(fused_cache.k[:, :, :, :end], ref_cache.k[:, :, :, :end], rtol=1e-4, atol=1e-4)
    assert torch.allclose(fused_cache.v[:, :, :, :end], ref_cache.v[:, :, :, :end], rtol=1e-4, atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 3, 5])  # one task per group, and query heads split into slices
def test_fused_step_is_the_same_at_any_thread_count(models, kernel_dir, threads):
    """The fused step splits its work among threads by whole rows and whole heads, so the thread
    count must not change what it computes. Every run steps from one prefilled cache: torch's
    prefill is not thread-invariant (on AVX-512 CPUs its matrix products sum in another order
    with another thread count, moving logits by ~1e-5 relative) and is not under test here."""
    model = _engine(models, "qwen2_15b", kernel_dir).model
    prompt = torch.randint(0, 400, (1, 150), generator=torch.Generator().manual_seed(threads))
    prefilled = _cache(model)
    model(prompt, prefilled, 0)
    pos, saved, results = prompt.shape[1], torch.get_num_threads(), []
    try:
        for n in (saved, threads):
            torch.set_num_threads(n)
            cache = _copy(prefilled)
            logits = [model(torch.tensor([[t]]), cache, pos + i) for i, t in enumerate((7, 99, 3))]
            results.append((torch.cat(logits), cache))
    finally:
        torch.set_num_threads(saved)
    (a, ca), (b, cb) = results
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    end = pos + 3
    assert torch.allclose(ca.k[:, :, :, :end], cb.k[:, :, :, :end], rtol=1e-5, atol=1e-5)
    assert torch.allclose(ca.v[:, :, :, :end], cb.v[:, :, :, :end], rtol=1e-5, atol=1e-5)


@needs_kernel
def test_greedy_tokens_are_the_same_fused_or_not(models, kernel_dir):
    model = _engine(models, "qwen25_05b", kernel_dir).model
    fused, runs = model.fused, []
    for use in (fused, None):
        model.fused = use
        cache, tokens = _cache(model), [11, 12, 13]
        logits = model(torch.tensor([tokens]), cache, 0)[0, -1]
        for _ in range(40):
            tokens.append(int(logits.argmax()))
            logits = model(torch.tensor([tokens[-1:]]), cache, len(tokens) - 1)[0, -1]
        runs.append(tokens)
    model.fused = fused
    assert runs[0] == runs[1]


@needs_kernel
def test_only_decode_steps_take_the_fused_path(models, kernel_dir, monkeypatch):
    engine = _engine(models, "qwen25_05b", kernel_dir)
    calls = []
    real = engine.model.fused.step
    monkeypatch.setattr(engine.model.fused, "step", lambda x, cache, pos: calls.append(pos) or real(x, cache, pos))
    engine.model(torch.tensor([[1, 2, 3, 4]]), engine.cache, 0)
    assert calls == []
    engine.model(torch.tensor([[5]]), engine.cache, 4)
    assert calls == [4]


def test_full_precision_and_torchs_kernel_keep_the_torch_path(models, kernel_dir, monkeypatch):
    assert ChatEngine.load(models["qwen25_05b"], device="cpu", quantize="none").model.fused is None
    monkeypatch.setattr(int8_kernel, "_loaded", {})
    monkeypatch.setattr(int8_kernel, "_compiler", lambda: None)
    assert _engine(models, "qwen25_05b", kernel_dir).model.fused is None
