"""The network against transformers' Qwen2ForCausalLM on the same weights, fp32."""

from __future__ import annotations

import pytest
import torch

from tests.engine.conftest import load_ours, new_cache

VARIANTS = ["qwen25_05b", "qwen2_15b", "untied", "base"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", [1, 2, 17, 130, 600])
def test_last_position_logits_match_transformers(tiny_models, reference_models, variant, length):
    ours, cfg = load_ours(tiny_models[variant])
    ref = reference_models[variant]
    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(0, 480, (1, length), generator=gen)
    with torch.no_grad():
        expected = ref(ids).logits[0, -1]
    got = ours(ids, new_cache(cfg), 0)[0, -1]
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_tokens_match_transformers_generate(tiny_models, reference_models, variant):
    ours, cfg = load_ours(tiny_models[variant])
    ref = reference_models[variant]
    prompt = torch.randint(0, 480, (1, 23), generator=torch.Generator().manual_seed(7))
    expected = reference_greedy(ref, prompt, 32)
    cache = new_cache(cfg)
    logits = ours(prompt, cache, 0)[0, -1]
    got = []
    for _ in range(32):
        tok = int(logits.argmax())
        got.append(tok)
        logits = ours(torch.tensor([[tok]]), cache, 23 + len(got) - 1)[0, -1]
    assert got == expected


def test_tied_output_projection_shares_the_embedding(tiny_models):
    ours, _ = load_ours(tiny_models["qwen25_05b"])
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    untied, _ = load_ours(tiny_models["untied"])
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()


def test_incremental_prefill_equals_full_prefill(tiny_models):
    """Chunks fed on top of a cache see exactly the causal context a full prefill sees."""
    ours, cfg = load_ours(tiny_models["qwen2_15b"])
    ids = torch.randint(0, 480, (1, 300), generator=torch.Generator().manual_seed(3))
    full = ours(ids, new_cache(cfg), 0, last_only=False)[0]
    cache = new_cache(cfg)
    ours(ids[:, :120], cache, 0)
    part = ours(ids[:, 120:299], cache, 120, last_only=False)[0]
    last = ours(ids[:, 299:], cache, 299)[0, -1]
    scale = full.abs().max().item()
    assert (part - full[120:299]).abs().max().item() < 1e-4 * max(1.0, scale)
    assert (last - full[299]).abs().max().item() < 1e-4 * max(1.0, scale)


def reference_greedy(ref, prompt: torch.Tensor, n: int) -> list[int]:
    """transformers' model decoding greedily with its own KV cache (generate() would also apply
    the checkpoint's generation_config, e.g. its repetition penalty)."""
    out, ids, past = [], prompt, None
    with torch.no_grad():
        for _ in range(n):
            res = ref(ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            tok = int(res.logits[0, -1].argmax())
            out.append(tok)
            ids = torch.tensor([[tok]])
    return out


@pytest.mark.parametrize("variant", ["qwen2_15b", "untied"])
def test_decode_steps_past_the_long_attention_threshold_match_transformers(tiny_models, reference_models, variant):
    """Decode steps with LONG_DECODE or more cached positions take decode_attention instead of
    SDPA; their logits still match transformers'."""
    from qwenchat.engine.model import LONG_DECODE

    ours, cfg = load_ours(tiny_models[variant])
    ref = reference_models[variant]
    n = LONG_DECODE + 3
    ids = torch.randint(0, 480, (1, n + 4), generator=torch.Generator().manual_seed(11))
    cache = new_cache(cfg)
    ours(ids[:, : n - 2], cache, 0)  # below the threshold: SDPA
    with torch.no_grad():
        for pos in range(n - 2, n + 4):  # crosses it
            got = ours(ids[:, pos : pos + 1], cache, pos)[0, -1]
            expected = ref(ids[:, : pos + 1]).logits[0, -1]
            scale = max(1.0, expected.abs().max().item())  # 517 positions of float32 sums
            assert (got - expected).abs().max().item() < 1e-4 * scale, pos


def test_decode_attention_equals_sdpa_with_grouped_heads():
    from qwenchat.engine.model import decode_attention

    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 14, 1, 64, generator=g)
    k, v = torch.randn(1, 2, 700, 64, generator=g), torch.randn(1, 2, 700, 64, generator=g)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert torch.allclose(decode_attention(q, k, v), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pos", [0, 40, 600])
def test_last_only_prefill_equals_the_last_row_of_a_full_one(tiny_models, pos):
    """The final layer of a last_only prefill computes one position, yet the logits and every
    cached key/value equal a full prefill's (at 600 cached positions its single query takes
    decode_attention)."""
    ours, cfg = load_ours(tiny_models["qwen2_15b"])
    ids = torch.randint(0, 480, (1, pos + 30), generator=torch.Generator().manual_seed(pos))
    full_cache, last_cache = new_cache(cfg), new_cache(cfg)
    if pos:
        ours(ids[:, :pos], full_cache, 0)
        ours(ids[:, :pos], last_cache, 0)
    full = ours(ids[:, pos:], full_cache, pos, last_only=False)[0, -1]
    last = ours(ids[:, pos:], last_cache, pos, last_only=True)
    assert last.shape == (1, 1, cfg.vocab_size)
    assert torch.allclose(last[0, -1], full, rtol=1e-5, atol=1e-5)
    n = pos + 30
    assert torch.equal(last_cache.k[:, :, :, :n], full_cache.k[:, :, :, :n])
    assert torch.equal(last_cache.v[:, :, :, :n], full_cache.v[:, :, :, :n])
