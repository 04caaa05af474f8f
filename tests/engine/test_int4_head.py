"""int4 mode's output projection (int4_head.py): a decode row's largest logits are the int8 rows'
products and the rest the int4 copy's; a prompt's rows are int8's alone; the choice is int8's."""

from __future__ import annotations

import pytest
import torch

from qwenchat.engine import int8_kernel
from qwenchat.engine.int4_head import Int4Head
from qwenchat.engine.quantize import DECODE_ROWS, Int8Linear, Scratch, quantize_int8
from qwenchat.engine.quantize_int4 import Int4Linear, quantize_int4
from tests.engine.test_int8_kernel import needs_kernel

V, K, TOP = 1500, 96, 16


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> int8_kernel.Int8Kernel:
    status = int8_kernel._load(tmp_path_factory.mktemp("kernels"))
    assert status.kernel is not None, status.reason
    return status.kernel


def _head(kernel, bias: bool) -> tuple[Int4Head, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The head and, in float64, its int8 and int4 matrices dequantized, and its bias."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(V, K, generator=g)
    b = torch.randn(V, generator=g) if bias else None
    q8, q4 = quantize_int8(w), quantize_int4(w, native=kernel)
    scratch = Scratch(kernel)
    head = Int4Head(Int4Linear(q4, b, scratch, kernel), Int8Linear(q8, b, scratch, 0, kernel), TOP)
    return head, q8.dequantize().double(), q4.dequantize().double(), b


@needs_kernel
@pytest.mark.parametrize("bias", [False, True])
def test_a_decode_rows_largest_logits_are_the_int8_rows_and_the_rest_int4s(kernel, bias):
    head, w8, w4, b = _head(kernel, bias)
    x = torch.randn(2, 1, K, generator=torch.Generator().manual_seed(6))
    got = head(x).double().view(2, V)
    want8, want4 = x.view(2, K).double() @ w8.T, x.view(2, K).double() @ w4.T
    if b is not None:
        want8, want4 = want8 + b.double(), want4 + b.double()
    tol = 1e-4 * float(want8.abs().max())
    for row in range(2):
        exact = want4[row].topk(TOP).indices  # int4's ranking picks the rows recomputed
        rest = torch.ones(V, dtype=torch.bool)
        rest[exact] = False
        assert float((got[row, exact] - want8[row, exact]).abs().max()) < tol
        assert float((got[row, rest] - want4[row, rest]).abs().max()) < tol
        assert float((want8[row, exact] - want4[row, exact]).abs().max()) > 100 * tol  # the two differ there
        assert int(got[row].argmax()) == int(want8[row].argmax())


@needs_kernel
def test_a_prompts_rows_are_int8s_alone(kernel):
    head, w8, w4, _b = _head(kernel, False)
    x = torch.randn(DECODE_ROWS + 3, K, generator=torch.Generator().manual_seed(7))
    got = head(x).double()
    want = x.double() @ w8.T
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())
    # the bound: DECODE_ROWS rows still take the int4 copy (their tails are int4's), one more does not
    at_bound = head(x[:DECODE_ROWS]).double()
    four = x[:DECODE_ROWS].double() @ w4.T
    tails = torch.ones_like(four, dtype=torch.bool).scatter_(1, four.topk(TOP, dim=1).indices, False)
    assert float((at_bound[tails] - four[tails]).abs().max()) < 1e-4 * float(four.abs().max())
    assert torch.equal(head(x[: DECODE_ROWS + 1]).double(), got[: DECODE_ROWS + 1])
    out = torch.empty(DECODE_ROWS + 3, V)
    assert head(x, out=out).data_ptr() == out.data_ptr() and torch.equal(out, got.float())


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3])
def test_the_kernel_recomputes_exactly_the_largest_logits(kernel, rows):
    """native/top_logits.c against torch: the same positions replaced (ties included: many equal
    values, which the threads' slices must not split differently), the rest untouched."""
    g = torch.Generator().manual_seed(8)
    n, k, top = 5003, 40, 37
    y = torch.randint(-50, 50, (rows, n), generator=g).float()  # ~100 copies of each value
    x, q = torch.randn(rows, k, generator=g), torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    scale, bias = torch.rand(n, generator=g), torch.randn(n, generator=g)
    got = kernel.top_logits(y.clone(), x, q, scale, bias, top)
    want = y.clone()
    for m in range(rows):
        # the largest values, the lower index first among equals (the kernel's order)
        order = sorted(range(n), key=lambda i: (-float(y[m, i]), i))[:top]
        idx = torch.tensor(order)
        want[m, idx] = (q[idx].double() @ x[m].double()).float() * scale[idx] + bias[idx]
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())
    assert int((got != y).sum()) == rows * top  # nothing else written
    with pytest.raises(ValueError, match="cannot be recomputed"):
        kernel.top_logits(y.clone(), x, q, scale, None, 0)


@needs_kernel
def test_a_nan_logit_is_left_alone_and_does_not_hide_the_largest(kernel):
    g = torch.Generator().manual_seed(9)
    n, k, top = 3000, 16, 5
    y = torch.randn(1, n, generator=g)
    y[0, :3] = float("nan")  # first in every slice's scan order
    x, q = torch.randn(1, k, generator=g), torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g)
    got = kernel.top_logits(y.clone(), x, q, scale, None, top)
    want = torch.nan_to_num(y, nan=-float("inf")).topk(top).indices[0]
    changed = ((got != y) & ~y.isnan()).nonzero()[:, 1]
    assert sorted(changed.tolist()) == sorted(want.tolist())
    assert bool(got[0, :3].isnan().all())
