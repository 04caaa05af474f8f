"""`--quantize int4` end to end on the tiny models: the int4 engine computes the model whose
weights are its dequantized int4 weights (prefill, the fused decode step and the torch modules),
greedy output equal; its cache file is int4 mode's own, checked like the int8 one; the mode is
accepted wherever quantize is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from qwenchat import config
from qwenchat.engine.chat import ChatEngine, GenerateOptions
from qwenchat.engine.checkpoint import Int8Checkpoint
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.device import choose, choose_quantize
from qwenchat.engine.errors import SettingsError
from qwenchat.engine.generate import Reply
from qwenchat.engine.int4_head import KIND as HEAD_KIND
from qwenchat.engine.int4_head import HeadWeights, Int4Head
from qwenchat.engine import model_build
from qwenchat.engine.model import Qwen2ForCausalLM
from qwenchat.engine.model_build import from_tensors, weight_kinds
from qwenchat.engine.prefetch import INT4_CACHE_FILE, int8_cache_path
from qwenchat.engine.quantize import Int8Embedding, Int8Linear, QTensor
from qwenchat.engine.quantize_int4 import Int4Embedding, Int4Linear, Q4Tensor
from tests.engine.conftest import new_cache
from tests.engine.test_int8_kernel import needs_kernel

LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kernels")


def _float_twin(model: Qwen2ForCausalLM, d: Path) -> Qwen2ForCausalLM:
    """A float32 model whose weights are `model`'s int4 weights dequantized."""
    twin = ChatEngine.load(d, device="cpu", quantize="none").model
    for mine, theirs in zip(model.model.layers, twin.model.layers):
        for name in LINEARS:
            lin = mine.get_submodule(name)  # int4, or int8 (INT4_QKV)
            w = lin.weight4.dequantize() if isinstance(lin, Int4Linear) else QTensor(lin.qweight, lin.scales).dequantize()
            theirs.get_submodule(name).weight.data.copy_(w)
    emb = model.model.embed_tokens
    if isinstance(emb, Int4Embedding):
        twin.model.embed_tokens.weight.data.copy_(Q4Tensor(emb.qweight, emb.scales, emb.lows, emb.cols).dequantize())
    else:
        assert isinstance(emb, Int8Embedding)  # INT4_EMBEDDING = "int8"
        twin.model.embed_tokens.weight.data.copy_(QTensor(emb.qweight, emb.scales).dequantize())
    head = model.lm_head.exact if isinstance(model.lm_head, Int4Head) else model.lm_head  # int8 rows: the exact logits
    if twin.lm_head.weight.data_ptr() != twin.model.embed_tokens.weight.data_ptr():  # untied
        w = head.weight4.dequantize() if isinstance(head, Int4Linear) else QTensor(head.qweight, head.scales).dequantize()
        twin.lm_head.weight.data.copy_(w)
    return twin


def _assert_logits_close(got: torch.Tensor, want: torch.Tensor, tol: float, head: torch.nn.Module) -> None:
    """All logits within `tol`, except a decode step's tail under int4 mode's output projection
    (int4_head.py: only its largest logits are the int8 rows' products; tests/engine/test_int4_head.py
    checks the rest): there the float twin's eight largest logits and its choice."""
    if not isinstance(head, Int4Head) or got.shape[-2] > 1:
        assert float((got - want).abs().max()) < tol
        return
    top = want.topk(8, dim=-1).indices
    assert float((got.gather(-1, top) - want.gather(-1, top)).abs().max()) < tol
    assert torch.equal(got.argmax(-1), want.argmax(-1))


@pytest.fixture(params=["avx2", "generic"])
def int4_path(request, kernel_dir):
    """The int4 products' path for the test (the library's switch, shared by every user of it)."""
    from qwenchat.engine import int8_kernel

    kernel = int8_kernel.load(kernel_dir).kernel
    assert kernel is not None and kernel.use_generic_int4(request.param == "generic") == request.param
    yield request.param
    kernel.use_generic_int4(False)


@needs_kernel
@pytest.mark.parametrize("variant", ["qwen25_05b", "untied"])
@pytest.mark.parametrize("embedding", ["int8", "int4"])  # the defaults, and every matrix int4
def test_int4_engine_equals_its_dequantized_float_twin(tiny_models, kernel_dir, variant, int4_path, embedding, monkeypatch):
    if embedding == "int4":
        monkeypatch.setattr(model_build, "INT4_EMBEDDING", "int4")
        monkeypatch.setattr(model_build, "INT4_OUTPUT", "int4")
        monkeypatch.setattr(model_build, "INT4_QKV", "int4")
    engine = ChatEngine.load(tiny_models[variant], device="cpu", quantize="int4", kernel_dir=kernel_dir)
    assert isinstance(engine.model.model.embed_tokens, Int4Embedding if embedding == "int4" else Int8Embedding)
    model = engine.model
    assert engine.info.quantize == "int4" and "weights: int4 weights, as requested" in engine.info.placement_reason
    assert model.fused is not None  # decode runs the C step on the int4 matrices
    qkv = Int4Linear if embedding == "int4" else Int8Linear  # INT4_QKV = "int8" by default
    assert all(isinstance(layer.self_attn.qkv_proj, qkv) for layer in model.model.layers)
    assert all(isinstance(layer.get_submodule(n), Int4Linear) for layer in model.model.layers for n in LINEARS[1:])
    twin = _float_twin(model, tiny_models[variant])
    g = torch.Generator().manual_seed(3)
    prompt, steps = torch.randint(0, 400, (1, 40), generator=g), torch.randint(0, 400, (1, 12), generator=g)
    c4, cf = new_cache(model.config), new_cache(twin.config)
    got, want = model(prompt, c4, 0, last_only=False), twin(prompt, cf, 0, last_only=False)
    # x rounded to 16-bit integers per 32 columns in the kernel: ~1e-5 relative per product
    tol = 1e-3 * float(want.abs().max())
    _assert_logits_close(got, want, tol, model.lm_head)
    assert isinstance(model.lm_head, Int4Head) == (embedding == "int8")  # INT4_OUTPUT follows INT4_EMBEDDING here
    for fused in (model.fused, None):  # the C step, then the torch modules on the same weights
        model.fused = fused
        a, b = _copy(c4), _copy(cf)
        for i in range(steps.shape[1]):
            t = steps[:, i : i + 1]
            got, want = model(t, a, 40 + i), twin(t, b, 40 + i)
            _assert_logits_close(got, want, tol, model.lm_head)


def _copy(cache):
    out = new_cache_like(cache)
    out.k.copy_(cache.k)
    out.v.copy_(cache.v)
    return out


def new_cache_like(cache):
    from qwenchat.engine.cache import KVCache

    n_layers, _, n_kv_heads, _, head_dim = cache.k.shape
    return KVCache(n_layers, n_kv_heads, head_dim, cache.max_len, cache.k.dtype, cache.k.device)


@needs_kernel
def test_int4_greedy_reply_equals_the_float_twins(tiny_model, kernel_dir):
    engine = ChatEngine.load(tiny_model, device="cpu", quantize="int4", kernel_dir=kernel_dir)
    twin = ChatEngine.load(tiny_model, device="cpu", quantize="none")
    twin.model = _float_twin(engine.model, tiny_model)
    opts = GenerateOptions(temperature=0.0, repetition_penalty=1.0, max_new_tokens=24)
    replies = []
    for e in (engine, twin):
        out = list(e.complete("hello world", opts))[-1]
        assert isinstance(out, Reply)
        replies.append(out.token_ids)
    assert replies[0] == replies[1] and len(replies[0]) > 0


def test_int4_without_the_kernel_runs_torchs_dequantized_products(tiny_model, monkeypatch):
    """No native kernel (another device, no compiler): every int4 product dequantizes; same model.
    (q/k/v all int4 here: int8 matrices without our kernel take torch's bfloat16 path.)"""
    monkeypatch.setattr(model_build, "INT4_QKV", "int4")
    cfg = Qwen2Config.from_file(tiny_model / "config.json")
    engine = ChatEngine.load(tiny_model, device="cpu", quantize="int4", dtype="float32")
    model = from_tensors(
        cfg, Int8Checkpoint(tiny_model, cfg, weight_kinds(cfg, "int4")), torch.device("cpu"), 256, torch.float32, "int4", None
    )
    assert model.fused is None and all(layer.mlp.down_proj.native is None for layer in model.model.layers)
    # no int4 copy of the output projection: nothing here would stream it
    assert weight_kinds(cfg, "int4", int4_kernel=False)["model.embed_tokens.weight"] == "int8"
    assert isinstance(model.lm_head, Int8Linear) and not isinstance(engine.model.lm_head, Int8Linear)
    ids = torch.randint(0, 400, (1, 9), generator=torch.Generator().manual_seed(1))
    # the hidden states: an int8 output projection without our kernel takes torch's bfloat16 path
    want = engine.model.hidden(ids, new_cache(cfg, 256), 0)
    got = model.hidden(ids, new_cache(cfg, 256), 0)
    assert float((got - want).abs().max()) < 1e-3 * float(want.abs().max())


def test_int4_cache_is_its_own_file_reused_and_checked(tiny_models, tmp_path):
    d = Path(shutil.copytree(tiny_models["untied"], tmp_path / "m"))
    root = tmp_path / "cache"
    cfg = Qwen2Config.from_file(d / "config.json")
    kinds = weight_kinds(cfg, "int4")
    assert set(kinds.values()) == {"int4", "int8", HEAD_KIND} and kinds["lm_head.weight"] == HEAD_KIND
    first = Int8Checkpoint(d, cfg, kinds, root)
    built = dict(first)
    path = int8_cache_path(root, d).with_name(INT4_CACHE_FILE)
    assert first.source == "quantized, cache written" and first.path == path and path.is_file()
    assert not int8_cache_path(root, d).exists()  # the int8 cache is another file, untouched
    second = Int8Checkpoint(d, cfg, kinds, root)
    cached = dict(second)
    assert second.source == "cache"
    for key, value in built.items():
        other = cached[key]
        if isinstance(value, Q4Tensor):
            assert isinstance(other, Q4Tensor) and other.cols == value.cols
            assert all(torch.equal(getattr(value, p), getattr(other, p)) for p in ("q", "scale", "low"))
        elif isinstance(value, QTensor):  # the embedding (INT4_EMBEDDING)
            assert torch.equal(value.q, other.q) and torch.equal(value.scale, other.scale)
        elif isinstance(value, HeadWeights):  # the output projection, both ways (INT4_OUTPUT)
            assert torch.equal(value.exact.q, other.exact.q) and torch.equal(value.exact.scale, other.exact.scale)
            assert other.fast.cols == value.fast.cols
            assert all(torch.equal(getattr(value.fast, p), getattr(other.fast, p)) for p in ("q", "scale", "low"))
        else:
            assert torch.equal(value, other)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged bytes: a checksum catches them
    path.write_bytes(bytes(data))
    third = Int8Checkpoint(d, cfg, kinds, root)
    dict(third)
    assert third.source.startswith("quantized, cache rebuilt (damaged") and "rebuilt" in third.note
    # an int8 cache is never taken for int4 weights, nor the other way round
    int8 = Int8Checkpoint(d, cfg, weight_kinds(cfg, "int8"), root)
    dict(int8)
    assert int8.source == "quantized, cache written" and Int8Checkpoint(d, cfg, kinds, root).path == path


def test_int4_is_accepted_wherever_quantize_is():
    cpu = choose("cpu", "auto")
    assert choose_quantize("int4", cpu, "auto", 10**9)[0] == "int4"
    assert choose_quantize("INT4 ", cpu, "auto", 10**9)[0] == "int4"
    assert choose_quantize("auto", cpu, "auto", 10**9)[0] == "int8"  # not the default (see README)
    with pytest.raises(SettingsError) as e:
        choose_quantize("int3", cpu, "auto", 10**9)
    assert "int4" in str(e.value)
    assert config.Settings().merged({"quantize": "int4"}).quantize == "int4"
    with pytest.raises(Exception, match="int4"):
        config.Settings().merged({"quantize": "int3"})
