"""The engine on a CUDA GPU, against transformers on the same GPU and our own CPU path.

Skipped where torch sees no CUDA GPU (CI has none). On a GPU machine:
`.venv/bin/python -m pytest tests/engine/test_cuda.py` (benchmarks/README.md says how the GPU
figures in BENCHMARKS.md were taken). float32 on the GPU is compared with transformers'
float32 at a tolerance that allows another summation order (cuBLAS picks its own blocking);
bfloat16, the default there, with our float32 at bfloat16's precision.
"""

from __future__ import annotations

import json

import pytest
import torch

from qwenchat.engine.chat import ChatEngine, GenerateOptions
from qwenchat.engine.generate import Chunk, Reply, prefill
from qwenchat.engine.attention import LONG_DECODE
from qwenchat.engine.model_build import EXACT_TOP_LOGITS
from qwenchat.engine.threads import gpu_host

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VARIANTS = ["qwen25_05b", "qwen2_15b", "untied", "base"]
TURN1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}]


@pytest.fixture(autouse=True)
def host_threads():
    """A GPU reply sets torch's thread count (threads.gpu_host); later tests get theirs back."""
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def exact_float32_products():
    """TF32 would round float32 products to 10 mantissa bits; the float32 comparisons need it off."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def run(events) -> Reply:
    reply = None
    for ev in events:
        if not isinstance(ev, Chunk):
            reply = ev
    assert reply is not None
    return reply


def gpu(model_dir, dtype: str = "float32", **kw) -> ChatEngine:
    return ChatEngine.load(model_dir, device="cuda", dtype=dtype, **kw)


def prompt_logits(engine: ChatEngine, ids: list[int]) -> torch.Tensor:
    engine.cache.reset()
    return prefill(engine.model, engine.cache, ids).float().cpu()


def close(got: torch.Tensor, want: torch.Tensor, rel: float) -> bool:
    return (got - want).abs().max().item() <= rel * max(1.0, want.abs().max().item())


def test_auto_places_the_model_and_its_cache_on_the_gpu(tiny_model):
    engine = ChatEngine.load(tiny_model)
    assert engine.info.device.startswith("cuda")
    assert engine.info.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert engine.info.quantize == "none"  # int8 is the CPU's default only
    assert {p.device.type for p in engine.model.parameters()} == {"cuda"}
    assert engine.cache.k.device.type == "cuda" and engine.model.fused is None


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", [1, 17, 600])
def test_float32_logits_match_transformers_on_the_gpu(tiny_models, variant, length):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_models[variant], dtype=torch.float32).cuda().eval()
    ours = gpu(tiny_models[variant])
    ids = torch.randint(0, 480, (1, length), generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        want = ref(ids.cuda()).logits[0, -1].float().cpu()
    got = prompt_logits(ours, ids[0].tolist())
    assert close(got, want, 1e-4)


@pytest.mark.parametrize("variant", ["qwen25_05b", "untied"])
def test_greedy_tokens_match_transformers_generate_on_the_gpu(tiny_models, variant):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_models[variant], dtype=torch.float32).cuda().eval()
    ours = gpu(tiny_models[variant])
    prompt = torch.randint(0, 480, (1, 23), generator=torch.Generator().manual_seed(7))
    want, ids, past = [], prompt.cuda(), None
    with torch.no_grad():  # transformers decoding greedily with its own cache (generate() would apply generation_config)
        for _ in range(32):
            res = ref(ids, past_key_values=past, use_cache=True)
            past, ids = res.past_key_values, res.logits[:, -1:].argmax(-1)
            want.append(int(ids))
    cache, model = ours.cache, ours.model
    cache.reset()
    logits, got = prefill(model, cache, prompt[0].tolist()), []
    for _ in range(32):
        got.append(int(logits.argmax()))
        logits = prefill(model, cache, got[-1:])
    assert got == want


# Cosine similarity of a 300-token prompt's last logits with float32's. The tiny random models'
# activations are large (norm weights up to 1.5, biases of 0.5), so rounding compounds more than in
# a trained model: float32 against half precision on the CPU gives 0.991 (bfloat16, 8 mantissa
# bits) and 0.99995 (float16, 11).
HALF_AGREEMENT = {"bfloat16": 0.98, "float16": 0.999}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_on_the_gpu_tracks_float32_on_the_cpu(tiny_models, dtype):
    ids = torch.randint(0, 480, (300,), generator=torch.Generator().manual_seed(5)).tolist()
    want = prompt_logits(ChatEngine.load(tiny_models["qwen2_15b"], device="cpu", dtype="float32", quantize="none"), ids)
    got = prompt_logits(gpu(tiny_models["qwen2_15b"], dtype=dtype), ids)
    assert torch.nn.functional.cosine_similarity(got, want, dim=0).item() > HALF_AGREEMENT[dtype]
    assert not close(got, want, 1e-6)  # it did run in half precision


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_chunk_on_top_of_the_gpu_cache_equals_one_prefill(tiny_models, dtype):
    """A follow-up's prompt attends to the cache through a bottom-right causal mask (model.chunk_attention:
    the flash kernel in bfloat16, the memory-efficient one in float32, as a first chunk does);
    fed in two calls, the same tokens give the logits of one call."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ids = torch.randint(0, 480, (700,), generator=torch.Generator().manual_seed(11)).tolist()
    assert len(ids) >= LONG_DECODE
    engine = gpu(tiny_models["qwen2_15b"], dtype=dtype)
    fast = SDPBackend.FLASH_ATTENTION if dtype == "bfloat16" else SDPBackend.EFFICIENT_ATTENTION
    # Under the fast kernel alone a fallback (the math kernel, a materialized mask) would raise. The
    # last layer's one query sees 700 keys in both calls: decode_attention, no SDPA (LONG_DECODE).
    with sdpa_kernel([fast]):
        whole = prompt_logits(engine, ids)
    engine.cache.reset()
    prefill(engine.model, engine.cache, ids[:300])
    with sdpa_kernel([fast]):
        split = prefill(engine.model, engine.cache, ids[300:]).float().cpu()
    if dtype == "float32":
        assert close(split, whole, 1e-4)
    else:  # bfloat16 roundings in another order; a wrong mask would change the logits wholesale
        assert torch.nn.functional.cosine_similarity(split, whole, dim=0).item() > 0.99


def test_follow_up_turn_reuses_the_gpu_cache_and_equals_a_fresh_prefill(tiny_model):
    engine = gpu(tiny_model)
    first = run(engine.chat(TURN1, GenerateOptions(max_new_tokens=8, temperature=0)))
    msgs = TURN1 + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "More?"}]
    second = run(engine.chat(msgs, GenerateOptions(max_new_tokens=8, temperature=0)))
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
    fresh = gpu(tiny_model)
    assert run(fresh.chat(msgs, GenerateOptions(max_new_tokens=8, temperature=0))).token_ids == second.token_ids
    assert torch.get_num_threads() == gpu_host().counts[0]  # few host threads serve a GPU step best


def test_sampling_on_the_gpu_repeats_with_a_seed(tiny_model):
    engine = gpu(tiny_model, dtype="bfloat16")
    opts = GenerateOptions(max_new_tokens=24, seed=42, temperature=1.0, top_k=20, top_p=0.9, min_p=0.01, repetition_penalty=1.1)
    a = run(engine.chat(TURN1, opts))
    engine.reset_cache()
    b = run(engine.chat(TURN1, opts))
    c = run(engine.chat(TURN1, GenerateOptions(max_new_tokens=24, seed=43, temperature=1.0, top_k=0)))
    assert a.token_ids == b.token_ids and len(a.token_ids) > 0
    assert c.token_ids != a.token_ids


def test_structured_output_on_the_gpu_parses_and_matches(tiny_models):
    engine = gpu(tiny_models["untied"], dtype="bfloat16")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    reply = run(engine.chat(TURN1, GenerateOptions(max_new_tokens=60, seed=1, temperature=1.0, constraint=schema)))
    if reply.finish_reason == "stop":
        value = json.loads(reply.text)
        assert set(value) == {"n"} and isinstance(value["n"], int)
    else:  # cut by the token limit: still a prefix of the schema's shape
        assert reply.text.startswith("{")


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_weights_on_the_gpu_match_the_cpu(tiny_model, quantize):
    """On the GPU each product dequantizes its int8/int4 weights; a prompt's logits then equal the
    CPU's (its native kernels, the same stored weights) up to summation order. In int4 mode the
    CPU's output projection gives a decode row int4 products but for the EXACT_TOP_LOGITS largest
    by those (int4_head.py), recomputed from the int8 rows, the GPU's the int8 rows' for all, so
    the largest quarter of those are compared there (the rest of the 64 can differ by which of them
    int4's ranking let in: seen on an H200), and the CPU's int4 kernel rounds activations to
    16-bit integers per 32 columns (int4_kernel.c), hence the looser bound."""
    ids = torch.randint(0, 480, (40,), generator=torch.Generator().manual_seed(9)).tolist()
    cpu = ChatEngine.load(tiny_model, device="cpu", dtype="float32", quantize=quantize)
    on_gpu = gpu(tiny_model, quantize=quantize)
    assert on_gpu.info.quantize == quantize and "dequantized per product" in on_gpu.info.placement_reason
    exact = prompt_logits(gpu(tiny_model, quantize="none"), ids)
    got, want = prompt_logits(on_gpu, ids), prompt_logits(cpu, ids)
    compared = slice(None) if quantize == "int8" else want.topk(EXACT_TOP_LOGITS // 4).indices
    assert close(got[compared], want[compared], 1e-4 if quantize == "int8" else 1e-3)
    assert int(got.argmax()) == int(want.argmax())
    assert not close(got, exact, 1e-6)  # the weights really were quantized


def test_ask_picks_the_gpu_by_itself(tiny_model, isolated_home):
    from tests.cli.inprocess import run_cli

    r = run_cli(["ask", "-m", str(tiny_model), "Hello", "--max-tokens", "6", "--seed", "1", "--json"], isolated_home, b"")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["device"].startswith("cuda") and out["dtype"] in ("bfloat16", "float16")
    assert out["usage"]["completion_tokens"] > 0


def test_recorded_decode_steps_give_the_eager_steps_tokens(tiny_models, monkeypatch):
    """cuda_graph.GraphDecoder: 80 greedy tokens through replayed graphs (three spans recorded)
    equal the eager steps' in float32; in bfloat16 the logits stay close."""
    from qwenchat.engine import cuda_graph

    monkeypatch.setattr(cuda_graph, "SPAN_STEP", 32)
    prompt = torch.randint(0, 480, (23,), generator=torch.Generator().manual_seed(8)).tolist()

    def decode(engine: ChatEngine, graphs: bool) -> tuple[list[int], torch.Tensor]:
        saved = engine.model.graphs
        engine.model.graphs = saved if graphs else None
        engine.cache.reset()
        logits, got, first = prefill(engine.model, engine.cache, prompt), [], None
        for _ in range(80):
            got.append(int(logits.argmax()))
            logits = prefill(engine.model, engine.cache, got[-1:])
            first = logits.float().cpu() if first is None else first
        engine.model.graphs = saved
        return got, first

    engine = gpu(tiny_models["qwen25_05b"])
    assert engine.model.graphs is not None
    (want, want_first), (got, got_first) = decode(engine, False), decode(engine, True)
    assert engine.model.graphs.failure is None
    assert sorted(engine.model.graphs._recorded) == [32, 64, 96, 128]
    assert got == want and close(got_first, want_first, 1e-4)
    half = gpu(tiny_models["qwen25_05b"], dtype="bfloat16")
    (_, eager), (_, graphed) = decode(half, False), decode(half, True)
    assert half.model.graphs.failure is None
    assert torch.nn.functional.cosine_similarity(graphed, eager, dim=0).item() > 0.999
