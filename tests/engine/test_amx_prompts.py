"""Prompt products on the CPU's matrix units (device.amx_prompts, quantize.Scratch.amx_prompts):
int8 weights times int8-rounded rows on our kernel's AMX tiles (native/int8_prompts.c), int4
weights in bfloat16. The numerics are forced on here whatever the CPU: the kernel computes the
same numbers in plain C loops where there are no tiles, and torch multiplies bfloat16 anywhere.
(tests/conftest.py keeps the path off for every other test.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenchat.engine import device
from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.device import AMX_PROMPTS_ENV, Placement, amx_prompts, choose
from qwenchat.engine.errors import SettingsError
from qwenchat.engine.generate import prefill
from qwenchat.engine.int8_kernel import COARSE_RATIO, _self_check_amx
from qwenchat.engine.int8_kernel import load as load_kernel
from qwenchat.engine.quantize import AMX_NATIVE_ROWS, NATIVE_ROWS, Int8Linear, Scratch, quantize_int8
from qwenchat.engine.quantize_int4 import INT4_AMX_ROWS, Int4Linear, quantize_int4

CPU = choose("cpu", "auto")  # float32 activations
ON, OFF = {AMX_PROMPTS_ENV: "1"}, {AMX_PROMPTS_ENV: "0"}


@pytest.fixture(scope="module")
def kernel():
    k = load_kernel(None).kernel
    if k is None:
        pytest.skip("qwenchat's int8 kernel cannot be built here")
    return k


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_the_variable_forces_it_either_way(quantize):
    assert amx_prompts(CPU, quantize, ON) and not amx_prompts(CPU, quantize, OFF)


def test_only_quantized_float32_models_on_the_cpu_take_it():
    assert not amx_prompts(CPU, "none", ON)  # full precision asked for: exact products
    assert not amx_prompts(choose("cpu", "bfloat16"), "int8", ON)
    assert not amx_prompts(Placement(torch.device("meta"), torch.float32, "a GPU's stand-in"), "int8", ON)


def test_without_the_variable_the_cpu_decides(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_matrix_units", lambda: True)
    assert amx_prompts(CPU, "int8", {})
    monkeypatch.setattr(device, "cpu_has_matrix_units", lambda: False)
    assert not amx_prompts(CPU, "int8", {})


def test_a_kernel_without_the_tiles_keeps_float32_products_unless_forced(monkeypatch):
    """An AMX CPU whose kernel cannot use the tiles (an old compiler, Linux refusing them) would
    multiply prompts in plain C loops: only when forced (the tests)."""
    monkeypatch.setattr(device, "cpu_has_matrix_units", lambda: True)
    assert not amx_prompts(CPU, "int8", {}, tiles=False)
    assert amx_prompts(CPU, "int8", ON, tiles=False)


def test_a_bad_value_is_a_clear_error():
    with pytest.raises(SettingsError, match=AMX_PROMPTS_ENV) as err:
        amx_prompts(CPU, "int8", {AMX_PROMPTS_ENV: "yes"})
    assert "unset it" in err.value.hint


def _rows(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def int8_rows_reference(x: torch.Tensor, q, bias: torch.Tensor | None) -> torch.Tensor:
    """int8_prompts.c's arithmetic in torch: each row rounded to int8 at max|x|/127, a second int8
    row (at a 254th of that scale) for what is left where max|x| > COARSE_RATIO * rms."""
    top = x.abs().amax(dim=1, keepdim=True)
    s1 = torch.where(top > 0, top / 127, torch.full_like(top, 1e-30))
    q1 = (x / s1).round()
    w = q.q.float()  # sums of int8 products stay exact in float32 at these sizes (< 2^24)
    y = (q1 @ w.t()) * s1 * q.scale
    y = y if bias is None else y + bias
    coarse = (top > COARSE_RATIO * x.square().mean(dim=1, keepdim=True).sqrt()).squeeze(1)
    s2 = s1 / 254
    q2 = ((x - q1 * s1) / s2).round().clamp(-127, 127)
    y[coarse] += ((q2 @ w.t()) * s2 * q.scale)[coarse]
    return y


@pytest.mark.parametrize("amx", [False, True])
def test_int8_prompt_rows_are_rounded_to_int8_per_row(kernel, amx):
    if amx and not kernel.amx:
        pytest.skip("this CPU has no AMX tiles (or Linux refused them)")
    q = quantize_int8(_rows(320, 1024, 1) * 0.05)
    bias, x = _rows(1, 320, 2)[0], _rows(37, 1024, 3)
    x[5, 11] = 200.0  # one value dwarfs its row (~32x its rms): that row gets a second int8 row
    y = kernel.int8_prompt_matmul(x, q.q, q.scale, bias, amx=amx)
    want = int8_rows_reference(x, q, bias)
    assert torch.allclose(y, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    exact = F.linear(x, q.dequantize()) + bias
    err = (y - exact).abs().max() / exact.abs().max()
    assert 0 < err < 5e-2  # random rows: int8's step is ~1/40 of their spread
    coarse_err = (y[5] - exact[5]).abs().max() / exact[5].abs().max()
    assert coarse_err < 1e-3  # the second int8 row: the outlier's row is the most precise of all


def test_the_tiles_give_the_plain_loops_bits(kernel):
    """Real shapes (the 0.5B model's MLP), rows of every kind: the AMX path is not an
    approximation of the plain one."""
    if not kernel.amx:
        pytest.skip("this CPU has no AMX tiles (or Linux refused them)")
    q = quantize_int8(_rows(896, 4864, 4) * 0.02)
    x = _rows(53, 4864, 5)
    x[::7, 100] = 300.0
    bias = _rows(1, 896, 6)[0]
    assert torch.equal(kernel.int8_prompt_matmul(x, q.q, q.scale, bias), kernel.int8_prompt_matmul(x, q.q, q.scale, bias, amx=False))


def test_a_tile_product_that_differs_turns_the_tiles_off():
    class Kernel:
        amx = True

        def int8_prompt_matmul(self, x, q, scale, bias, out=None, amx=True):
            return torch.full((x.shape[0], q.shape[0]), 1.0 if amx else 0.0)

    k = Kernel()
    _self_check_amx(k, torch.Generator().manual_seed(0))
    assert k.amx is False


@pytest.mark.parametrize("amx_prompts", [False, True])
def test_the_native_kernel_keeps_decode_rows_where_the_matrix_units_run(kernel, monkeypatch, amx_prompts):
    """With matrix units every product of two rows or more goes to them (a follow-up's 20
    tokens too); one row (decoding) keeps float32 activations. Elsewhere the kernel keeps up to
    NATIVE_ROWS rows."""
    calls: list[int] = []
    native_matmul = kernel.matmul
    monkeypatch.setattr(kernel, "matmul", lambda x2, *a: calls.append(x2.shape[0]) or native_matmul(x2, *a))
    q = quantize_int8(_rows(64, 128, 7) * 0.05)
    lin = Int8Linear(q, None, Scratch(kernel, amx_prompts=amx_prompts), native=kernel)
    limit = AMX_NATIVE_ROWS if amx_prompts else NATIVE_ROWS
    for rows in sorted({1, limit, limit + 1}):
        x = _rows(rows, 128, rows)
        y = lin(x)
        if rows > limit and amx_prompts:
            assert torch.allclose(y, int8_rows_reference(x, q, None), rtol=1e-5, atol=1e-5 * y.abs().max().item())
    assert calls == ([1] if amx_prompts else [1, limit])


def test_a_shape_the_tiles_cannot_take_keeps_float_products(kernel, monkeypatch):
    """...and the native kernel for up to NATIVE_ROWS rows, as on a CPU without the tiles."""
    if not kernel.amx:
        pytest.skip("this CPU has no AMX tiles (or Linux refused them)")
    calls: list[int] = []
    native_matmul = kernel.matmul
    monkeypatch.setattr(kernel, "matmul", lambda x2, *a: calls.append(x2.shape[0]) or native_matmul(x2, *a))
    q = quantize_int8(_rows(40, 100, 8) * 0.05)  # K not a multiple of 64
    lin = Int8Linear(q, None, Scratch(kernel, amx_prompts=True), native=kernel)
    x = _rows(30, 100, 9)
    assert torch.allclose(lin(x), F.linear(x, q.dequantize()), rtol=1e-5, atol=1e-4)
    assert calls == [30]
    x = _rows(NATIVE_ROWS + 1, 100, 10)
    assert torch.allclose(lin(x), F.linear(x, q.dequantize()), rtol=1e-5, atol=1e-4)
    assert calls == [30]  # past NATIVE_ROWS: the dequantized float product


def test_int4_prompt_rows_multiply_in_bfloat16():
    w = quantize_int4(_rows(300, 256, 4) * 0.05)
    bias, x = _rows(1, 300, 5)[0], _rows(INT4_AMX_ROWS + 20, 256, 6)
    lin = Int4Linear(w, bias, Scratch(None, amx_prompts=True))
    want = F.linear(x.bfloat16(), w.dequantize(torch.bfloat16)).float() + bias
    assert torch.equal(lin(x), want)
    exact = Int4Linear(w, bias, Scratch(None))(x)
    assert not torch.equal(lin(x), exact) and torch.allclose(lin(x), exact, rtol=2e-2, atol=2e-2 * exact.abs().max().item())


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_a_prompt_through_the_engine_stays_close_to_float32_products(tiny_models, monkeypatch, quantize):
    """The tiny random models (large activations) at 333 prompt tokens: the last logits close to
    the float32 products' (cosine 0.984-0.986 measured: int8 rows of random activations lose
    more than the real model's, whose perplexity the quality guard measures), float32's choice among the top three."""
    ids = torch.randint(0, 480, (333,), generator=torch.Generator().manual_seed(5)).tolist()
    logits = {}
    for value in ("0", "1"):
        monkeypatch.setenv(AMX_PROMPTS_ENV, value)
        engine = ChatEngine.load(tiny_models["qwen2_15b"], device="cpu", quantize=quantize)
        assert ("on the CPU's matrix units" in engine.info.placement_reason) == (value == "1")
        dtypes = {layer.self_attn.prompt_dtype for layer in engine.model.model.layers}
        assert dtypes == ({torch.bfloat16} if value == "1" else {None})  # the prompt's attention too
        logits[value] = prefill(engine.model, engine.cache, ids)
    fp32, units = logits["0"], logits["1"]
    assert not torch.equal(fp32, units)
    assert F.cosine_similarity(fp32, units, dim=0).item() > 0.97
    assert int(fp32.argmax()) in units.topk(3).indices.tolist()  # near ties of random logits may swap


def test_rows_that_lie_apart_are_read_in_place(kernel, monkeypatch):
    """The MLP hands down_proj the gated half of its gate/up buffer, rows 2I apart (read in place,
    by a row stride): the same numbers as the rows copied together."""
    q = quantize_int8(_rows(48, 128, 10) * 0.05)
    wide = _rows(20, 256, 11)
    x = wide[:, :128]
    assert not x.is_contiguous()
    read_from: list[int] = []
    native = kernel._prompt
    spy = lambda ptr, *a: read_from.append(ptr) or native(ptr, *a)  # noqa: E731
    monkeypatch.setattr(kernel, "_prompt", spy)
    y = kernel.int8_prompt_matmul(x, q.q, q.scale, None, amx=False)
    assert read_from == [x.data_ptr()]  # the rows where they lie, not a copy
    assert torch.equal(y, kernel.int8_prompt_matmul(x.contiguous(), q.q, q.scale, None, amx=False))
    if kernel.amx:
        assert torch.equal(kernel.int8_prompt_matmul(x, q.q, q.scale, None), y)


def test_a_result_buffer_off_a_64_byte_line_still_receives_the_product(kernel):
    q = quantize_int8(_rows(32, 128, 12) * 0.05)
    x = _rows(9, 128, 13)
    room = torch.zeros(9 * 32 + 1)
    out = room[1:].view(9, 32)  # 4 bytes past an aligned start
    got = kernel.int8_prompt_matmul(x, q.q, q.scale, None, out=out, amx=kernel.amx)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(out, kernel.int8_prompt_matmul(x, q.q, q.scale, None, amx=False))


def test_int4_keeps_its_kernel_and_float_products_below_the_bfloat16_rows(kernel, monkeypatch):
    """Converting every int4 weight to bfloat16 costs ~0.5 s a prompt: only prompts past
    INT4_AMX_ROWS pay it; fewer rows take the int4 kernel (up to NATIVE_ROWS), then float32."""
    calls: list[int] = []
    native = kernel.int4_matmul
    monkeypatch.setattr(kernel, "int4_matmul", lambda x, *a: calls.append(x.shape[0]) or native(x, *a))
    w = quantize_int4(_rows(64, 128, 14) * 0.05)
    lin = Int4Linear(w, None, Scratch(kernel, amx_prompts=True), native=kernel)
    plain = Int4Linear(w, None, Scratch(None))
    for rows in (NATIVE_ROWS, NATIVE_ROWS + 1, INT4_AMX_ROWS):
        x = _rows(rows, 128, rows)
        assert torch.allclose(lin(x), plain(x), rtol=1e-4, atol=1e-4)  # float32 either way
    x = _rows(INT4_AMX_ROWS + 1, 128, 15)
    assert torch.equal(lin(x), F.linear(x.bfloat16(), w.dequantize(torch.bfloat16)).float())
    assert calls == [NATIVE_ROWS]


@pytest.mark.parametrize("amx", [False, True])
def test_rows_past_a_pass_and_a_last_band_of_16_channels(kernel, amx):
    """300 rows (two passes of the tiles over the weights) with second rows that land in a later
    pass than their first, and 48 channels (a last band of one tile): the reference's numbers."""
    if amx and not kernel.amx:
        pytest.skip("this CPU has no AMX tiles (or Linux refused them)")
    q = quantize_int8(_rows(48, 1024, 16) * 0.05)
    x = _rows(300, 1024, 17)
    x[[0, 15, 16, 255, 256, 299], 3] = 200.0  # their second rows come after row 299
    x[40] = 0.0
    bias = _rows(1, 48, 18)[0]
    y = kernel.int8_prompt_matmul(x, q.q, q.scale, bias, amx=amx)
    want = int8_rows_reference(x, q, bias)
    assert torch.allclose(y, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_a_row_that_is_not_finite_gives_nan_as_a_float_product_would(kernel):
    q = quantize_int8(_rows(32, 128, 19) * 0.05)
    x = _rows(20, 128, 20)
    x[3, 5], x[7, 9] = float("nan"), float("inf")
    for amx in {False, kernel.amx}:
        y = kernel.int8_prompt_matmul(x, q.q, q.scale, None, amx=amx)
        assert y[3].isnan().all() and y[7].isnan().all()
        assert torch.isfinite(torch.cat([y[:3], y[4:7], y[8:]])).all()
