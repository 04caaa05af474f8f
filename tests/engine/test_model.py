"""The network against transformers' Qwen2ForCausalLM on the same weights, fp32."""

from __future__ import annotations

import pytest
import torch

from qwenchat.engine import layer_major
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
    from qwenchat.engine.attention import LONG_DECODE

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
    from qwenchat.engine.attention import decode_attention

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
    # the final layer's products take other shapes (one row against all), so their sums go in
    # another order: a difference relative to the logits' scale, not to each logit
    assert (last[0, -1] - full).abs().max() <= 1e-4 * full.abs().max()
    n = pos + 30
    assert torch.equal(last_cache.k[:, :, :, :n], full_cache.k[:, :, :, :n])
    assert torch.equal(last_cache.v[:, :, :, :n], full_cache.v[:, :, :, :n])


# -- layer-major prefill (layer_major.prefill) against the plain per-layer path ------------

PLAIN_CHUNK = 1024  # what generate.prefill fed per call before prefill went layer-major


def _load(model_dir, quantize: str, max_len: int = 2048):
    """float32, int8 with torch's kernel, or int8 with ours (the default CPU mode)."""
    from qwenchat.engine import int8_kernel
    from qwenchat.engine.config import Qwen2Config
    from qwenchat.engine import model_build
    from qwenchat.engine.weights import load_state_dict

    cfg = Qwen2Config.from_file(model_dir / "config.json")
    native = None
    if quantize == "int8-native":
        native = int8_kernel.load(None).kernel
        if native is None:
            pytest.skip("qwenchat's int8 kernel cannot be built here")
    state = load_state_dict(model_dir, cfg, torch.float32)
    mode = "none" if quantize == "none" else "int8"
    return model_build.from_tensors(cfg, state.items(), torch.device("cpu"), max_len, torch.float32, mode, native), cfg


def _plain_prefill(model, cache, ids: torch.Tensor, pos: int, last_only: bool, size: int = PLAIN_CHUNK) -> torch.Tensor:
    """The old way: each layer's forward() over `size`-token chunks, those after the first with a
    full additive mask (what other devices still run); the logits of every position, or the last."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(layer_major, "runs_on", lambda device: False)
        out = []
        for a in range(0, ids.shape[1], size):
            chunk = ids[:, a : a + size]
            out.append(model(chunk, cache, pos + a, last_only=last_only)[0])
    return out[-1][-1:] if last_only else torch.cat(out)


def _close(got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.shape == want.shape
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() < tol * scale


@pytest.mark.parametrize(("quantize", "tol"), [("none", 1e-4), ("int8", 1e-2), ("int8-native", 1e-4)])
@pytest.mark.parametrize("prefix", [0, 300])
@pytest.mark.parametrize("last_only", [False, True])
def test_layer_major_prefill_equals_the_plain_chunked_one(tiny_models, monkeypatch, quantize, tol, prefix, last_only):
    """Logits and every cached key/value agree for a prompt of several row blocks fed in one call,
    alone or after a cached prefix, and the same prompt fed in chunks of a row block (as
    generate.prefill did). int8 with torch's kernel rounds each product to bfloat16, so a changed
    summation order can move a value by one bfloat16 step; the other modes differ in the order
    of float32 sums only."""
    monkeypatch.setattr(layer_major, "ROW_BLOCK", 128)  # 3 row blocks
    monkeypatch.setattr(layer_major, "QUERY_BLOCK", 128)  # 3 query blocks on top of a cache
    model, cfg = _load(tiny_models["qwen2_15b"], quantize)
    ids = torch.randint(0, 480, (1, prefix + 333), generator=torch.Generator().manual_seed(prefix + 5))
    plain_cache, cache = new_cache(cfg, 2048), new_cache(cfg, 2048)
    if prefix:
        _plain_prefill(model, plain_cache, ids[:, :prefix], 0, True, 128)
        model(ids[:, :prefix], cache, 0)
    want = _plain_prefill(model, plain_cache, ids[:, prefix:], prefix, last_only, 128)
    got = model(ids[:, prefix:], cache, prefix, last_only=last_only)[0]
    _close(got, want, tol)
    n = ids.shape[1]
    _close(cache.k[:, :, :, :n], plain_cache.k[:, :, :, :n], tol)
    _close(cache.v[:, :, :, :n], plain_cache.v[:, :, :, :n], tol)


@pytest.mark.parametrize("quantize", ["none", "int8-native"])
def test_a_prompt_longer_than_a_row_block_and_a_plain_chunk_matches(tiny_models, quantize):
    """At the real ROW_BLOCK: ROW_BLOCK + 76 tokens in one layer-major call (two row blocks)
    against the plain path's 1,024-token chunks, on top of a 50-token prefix."""
    model, cfg = _load(tiny_models["qwen25_05b"], quantize, max_len=4096)
    n = 50 + layer_major.ROW_BLOCK + 76
    ids = torch.randint(0, 480, (1, n), generator=torch.Generator().manual_seed(9))
    plain_cache, cache = new_cache(cfg, 4096), new_cache(cfg, 4096)
    _plain_prefill(model, plain_cache, ids[:, :50], 0, True)
    model(ids[:, :50], cache, 0)
    want = _plain_prefill(model, plain_cache, ids[:, 50:], 50, False)
    got = model(ids[:, 50:], cache, 50, last_only=False)[0]
    _close(got, want, 1e-4)
    _close(cache.k[:, :, :, :n], plain_cache.k[:, :, :, :n], 1e-4)
    _close(cache.v[:, :, :, :n], plain_cache.v[:, :, :, :n], 1e-4)


@pytest.mark.parametrize(("pos", "T", "block"), [(1, 5, 5), (37, 300, 128), (500, 1000, 256), (3, 129, 128)])
def test_blocked_attention_equals_one_masked_call(pos, T, block):
    from qwenchat.engine.layer_major import block_mask, blocked_attention

    g = torch.Generator().manual_seed(T)
    q = torch.randn(1, 6, T, 32, generator=g)
    k, v = torch.randn(1, 2, pos + T, 32, generator=g), torch.randn(1, 2, pos + T, 32, generator=g)
    hidden = torch.arange(pos + T)[None, :] > torch.arange(pos, pos + T)[:, None]
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~hidden, enable_gqa=True)
    mask = block_mask(pos, T, min(T, block), torch.float32, torch.device("cpu"))
    got = blocked_attention(q, k, v, mask, torch.full((1, T, 6, 32), float("nan")))
    assert torch.allclose(got.transpose(1, 2), want, atol=1e-5, rtol=1e-5)


def test_row_blocks_cover_the_rows_in_near_equal_blocks(monkeypatch):
    from qwenchat.engine.layer_major import row_blocks

    monkeypatch.setattr(layer_major, "ROW_BLOCK", 1024)
    assert row_blocks(3417) == [(0, 855), (855, 1710), (1710, 2565), (2565, 3417)]
    assert row_blocks(1024) == [(0, 1024)] and row_blocks(1025) == [(0, 513), (513, 1025)]
    assert row_blocks(2) == [(0, 2)] and row_blocks(300, 128) == [(0, 100), (100, 200), (200, 300)]


def test_cancel_stops_a_long_prefill_between_layers_and_records_nothing(tiny_models):
    import threading

    from qwenchat.engine.generate import prefill

    model, cfg = _load(tiny_models["qwen2_15b"], "none")
    ids = torch.randint(0, 480, (300,), generator=torch.Generator().manual_seed(4)).tolist()
    cache = new_cache(cfg, 2048)
    prefill(model, cache, ids[:40])
    cancel, ran = threading.Event(), []
    layers = model.model.layers
    hooks = [layers[0].mlp.gate_up_proj.register_forward_pre_hook(lambda m, a: cancel.set())]
    hooks.append(layers[1].mlp.gate_up_proj.register_forward_pre_hook(lambda m, a: ran.append(1)))
    assert prefill(model, cache, ids[40:], cancel) is None
    assert ran == [] and cache.tokens == ids[:40]  # stopped before layer 1; nothing recorded
    for h in hooks:
        h.remove()
    resumed = prefill(model, cache, ids[40:])
    fresh = prefill(model, new_cache(cfg, 2048), ids)
    _close(resumed, fresh, 1e-4)


def test_attention_runs_without_the_cudnn_backend_and_restores_it(tiny_models, monkeypatch):
    """cuDNN's SDPA builds a plan per new shape (60-750 ms on an H200): every decode step is a new
    length, so the model's calls leave it out, and give the process its setting back after."""
    ours, cfg = load_ours(tiny_models["qwen25_05b"])
    seen: list[bool] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    cache = new_cache(cfg)
    ids = torch.randint(0, 480, (1, 30), generator=torch.Generator().manual_seed(2))
    ours(ids, cache, 0)
    ours(ids[:, :1], cache, 30)
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled()
