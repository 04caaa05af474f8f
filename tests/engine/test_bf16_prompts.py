"""Prompt products in bfloat16 on CPUs with bfloat16 matrix units (device.bf16_prompts and
quantize.Scratch.bf16_prompts). The path is forced on here whatever the CPU: torch multiplies
bfloat16 matrices on any x86 CPU, only slowly without AMX, so its numerics are tested everywhere.
(tests/conftest.py keeps it off for every other test.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenchat.engine import device
from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.device import BF16_PROMPTS_ENV, Placement, bf16_prompts, choose
from qwenchat.engine.errors import SettingsError
from qwenchat.engine.generate import prefill
from qwenchat.engine.int8_kernel import load as load_kernel
from qwenchat.engine.quantize import BF16_NATIVE_ROWS, NATIVE_ROWS, Int8Linear, Scratch, quantize_int8
from qwenchat.engine.quantize_int4 import Int4Linear, quantize_int4

CPU = choose("cpu", "auto")  # float32 activations
ON, OFF = {BF16_PROMPTS_ENV: "1"}, {BF16_PROMPTS_ENV: "0"}


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_the_variable_forces_it_either_way(quantize):
    assert bf16_prompts(CPU, quantize, ON) and not bf16_prompts(CPU, quantize, OFF)


def test_only_quantized_float32_models_on_the_cpu_take_it():
    assert not bf16_prompts(CPU, "none", ON)  # full precision asked for: exact products
    assert not bf16_prompts(choose("cpu", "bfloat16"), "int8", ON)
    assert not bf16_prompts(Placement(torch.device("meta"), torch.float32, "a GPU's stand-in"), "int8", ON)


def test_without_the_variable_the_cpu_decides(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_bf16_matrix_units", lambda: True)
    assert bf16_prompts(CPU, "int8", {})
    monkeypatch.setattr(device, "cpu_has_bf16_matrix_units", lambda: False)
    assert not bf16_prompts(CPU, "int8", {})


def test_a_bad_value_is_a_clear_error():
    with pytest.raises(SettingsError, match=BF16_PROMPTS_ENV) as err:
        bf16_prompts(CPU, "int8", {BF16_PROMPTS_ENV: "yes"})
    assert "unset it" in err.value.hint


def _rows(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("native", [False, True])
def test_int8_prompt_rows_multiply_in_bfloat16_then_take_the_float32_scales(native):
    kernel = load_kernel(None).kernel if native else None
    if native and kernel is None:
        pytest.skip("qwenchat's int8 kernel cannot be built here")
    q = quantize_int8(_rows(300, 200, 1) * 0.05)
    bias, x = _rows(1, 300, 2)[0], _rows(NATIVE_ROWS + 20, 200, 3)
    lin = Int8Linear(q, bias, Scratch(kernel, bf16_prompts=True), native=kernel)
    want = F.linear(x.bfloat16(), q.q.bfloat16()).float() * q.scale + bias
    assert torch.equal(lin(x), want)
    exact = F.linear(x, q.dequantize()) + bias
    assert not torch.equal(lin(x), exact) and torch.allclose(lin(x), exact, rtol=2e-2, atol=2e-2 * exact.abs().max().item())
    if native:  # a decode row keeps the float32 kernel
        alone = Int8Linear(q, bias, Scratch(kernel), native=kernel)
        assert torch.equal(lin(x[:1]), alone(x[:1]))


@pytest.mark.parametrize("bf16", [False, True])
def test_the_native_kernel_takes_fewer_rows_where_bfloat16_products_run(monkeypatch, bf16):
    """With bfloat16 matrix units a short prompt (a follow-up's 20-90 tokens) goes to them too:
    the kernel keeps up to BF16_NATIVE_ROWS rows there, NATIVE_ROWS elsewhere."""
    kernel = load_kernel(None).kernel
    if kernel is None:
        pytest.skip("qwenchat's int8 kernel cannot be built here")
    calls: list[int] = []
    native_matmul = kernel.matmul
    monkeypatch.setattr(kernel, "matmul", lambda x2, *a: calls.append(x2.shape[0]) or native_matmul(x2, *a))
    q = quantize_int8(_rows(64, 96, 7) * 0.05)
    lin = Int8Linear(q, None, Scratch(kernel, bf16_prompts=bf16), native=kernel)
    limit = BF16_NATIVE_ROWS if bf16 else NATIVE_ROWS
    for rows in (1, limit, limit + 1):
        x = _rows(rows, 96, rows)
        y = lin(x)
        if rows > limit and bf16:
            assert torch.equal(y, F.linear(x.bfloat16(), q.q.bfloat16()).float() * q.scale)
    assert calls == [1, limit]


def test_int4_prompt_rows_multiply_in_bfloat16():
    w = quantize_int4(_rows(300, 256, 4) * 0.05)
    bias, x = _rows(1, 300, 5)[0], _rows(NATIVE_ROWS + 20, 256, 6)
    lin = Int4Linear(w, bias, Scratch(None, bf16_prompts=True))
    want = F.linear(x.bfloat16(), w.dequantize(torch.bfloat16)).float() + bias
    assert torch.equal(lin(x), want)
    exact = Int4Linear(w, bias, Scratch(None))(x)
    assert not torch.equal(lin(x), exact) and torch.allclose(lin(x), exact, rtol=2e-2, atol=2e-2 * exact.abs().max().item())


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_a_prompt_through_the_engine_stays_close_to_float32_products(tiny_models, monkeypatch, quantize):
    """The tiny random models (large activations) at 333 prompt tokens: cosine similarity of the
    last logits with the float32 products' 0.9991-0.9996 when measured, same argmax."""
    ids = torch.randint(0, 480, (333,), generator=torch.Generator().manual_seed(5)).tolist()
    logits = {}
    for value in ("0", "1"):
        monkeypatch.setenv(BF16_PROMPTS_ENV, value)
        engine = ChatEngine.load(tiny_models["qwen2_15b"], device="cpu", quantize=quantize)
        assert ("prompt products in bfloat16" in engine.info.placement_reason) == (value == "1")
        logits[value] = prefill(engine.model, engine.cache, ids)
    fp32, bf16 = logits["0"], logits["1"]
    assert not torch.equal(fp32, bf16)
    assert F.cosine_similarity(fp32, bf16, dim=0).item() > 0.998
    assert int(fp32.argmax()) == int(bf16.argmax())
