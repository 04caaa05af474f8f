"""Group-wise int4 quantization (quantize_int4.py): the packed layout, the rounding bounds, the
range search and the Lloyd steps, partial groups."""

from __future__ import annotations

import pytest
import torch

from qwenchat.engine import quantize_int4 as q4
from qwenchat.engine.quantize_int4 import CHUNK, GROUP, padded, pack, quantize_int4, unpack
from tests.engine.test_int8_kernel import needs_kernel


def _w(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) + torch.randn(n, 1, generator=g) * 0.3


def _per_column(t: torch.Tensor, k: int) -> torch.Tensor:
    """(N, groups) -> (N, k): each group's value on each of its columns."""
    return t.float().repeat_interleave(GROUP, dim=1)[:, :k]


def test_pack_then_unpack_is_the_identity_and_follows_the_chunk_layout():
    q = torch.randint(0, 16, (3, 64), dtype=torch.uint8)
    p = pack(q)
    assert p.shape == (3, 32) and torch.equal(unpack(p), q)
    # byte j of a chunk: column j in the low nibble, column j + 16 in the high one
    assert int(p[1, 5]) == int(q[1, 5]) | int(q[1, 21]) << 4
    assert int(p[2, 16 + 3]) == int(q[2, 32 + 3]) | int(q[2, 32 + 19]) << 4


@pytest.mark.parametrize(("n", "k"), [(5, 64), (3, 45), (7, 29), (2, 896), (1, 1)])
def test_without_the_range_search_every_error_is_at_most_half_a_step(monkeypatch, n, k):
    monkeypatch.setattr(q4, "RANGE_SEARCH", (1.0,))
    monkeypatch.setattr(q4, "REFINE_STEPS", 0)
    w = _w(n, k, k)
    qt = quantize_int4(w)
    assert qt.shape == (n, k) and qt.q.shape == (n, padded(k) // 2) and qt.scale.dtype == torch.bfloat16
    err = (qt.dequantize() - w).abs()
    assert bool((err <= _per_column(qt.scale, k) / 2 + 1e-6 * w.abs()).all())


@pytest.mark.parametrize(("n", "k"), [(16, 96), (4, 77)])
@pytest.mark.parametrize("knob", ["RANGE_SEARCH", "REFINE_STEPS"])
def test_the_range_search_and_the_lloyd_steps_never_raise_a_groups_squared_error(monkeypatch, n, k, knob):
    """Each stage keeps a group's grid unless it finds one with less squared error; on random
    weights both do find better ones."""
    w = _w(n, k, 3)
    if knob == "RANGE_SEARCH":
        monkeypatch.setattr(q4, "REFINE_STEPS", 0)
    better = quantize_int4(w).dequantize()
    monkeypatch.setattr(q4, knob, (1.0,) if knob == "RANGE_SEARCH" else 0)
    plain = quantize_int4(w).dequantize()
    assert bool((_group_sse(better, w) <= _group_sse(plain, w) * (1 + 1e-6) + 1e-12).all())
    assert float(_group_sse(better, w).sum()) < float(_group_sse(plain, w).sum())


def _group_sse(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    n, k = w.shape
    return torch.nn.functional.pad((d - w) ** 2, (0, padded(k) - k)).view(n, -1, GROUP).sum(-1)


def test_the_dequantized_value_is_exactly_scale_times_q_plus_min():
    w = _w(6, 64, 1)
    qt = quantize_int4(w)
    q = unpack(qt.q).float()
    want = q * _per_column(qt.scale, 64) + _per_column(qt.low, 64)
    assert torch.equal(qt.dequantize(), want)
    assert int(q.max()) <= 15 and int(q.min()) >= 0


def test_the_padding_of_a_partial_group_does_not_pull_its_range():
    """Columns past K are zeros in the packed rows but must not widen the last group's range:
    a group of large positive weights keeps a fine grid."""
    w = torch.full((2, 40), 5.0) + torch.linspace(0, 0.15, 40)
    qt = quantize_int4(w)
    last = qt.scale.float()[:, -1]
    assert bool((last <= 0.15 / 15 * 1.01).all())  # the range of columns 32..39, not 0..5.15
    assert float((qt.dequantize() - w).abs().max()) < 0.01


def test_rows_written_in_blocks_equal_one_pass():
    w = _w(10, 64, 2)
    whole = quantize_int4(w)
    out = q4.empty_q4(10, 64)
    quantize_int4(w[:4], out, 0)
    quantize_int4(w[4:], out, 4)
    assert torch.equal(out.q, whole.q) and torch.equal(out.scale, whole.scale) and torch.equal(out.low, whole.low)


def test_an_all_zero_row_and_a_constant_group_round_trip_exactly():
    w = torch.zeros(2, CHUNK)
    w[1] = 0.75
    assert torch.equal(quantize_int4(w).dequantize(), w)


def test_a_group_size_that_is_not_a_multiple_of_the_chunk_is_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_int4(torch.zeros(2, 64), group=48)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    from qwenchat.engine import int8_kernel

    status = int8_kernel._load(tmp_path_factory.mktemp("kernels"))
    assert status.kernel is not None, status.reason
    return status.kernel


@needs_kernel
@pytest.mark.parametrize(("n", "k"), [(70, 45), (33, 896), (5, 29), (300, 64)])
def test_the_c_quantizer_makes_the_same_fit_as_torch(kernel, n, k):
    """The same arithmetic; only the order of each grid's error sum differs, so a near-tie may
    pick another grid: then both fits are equally good."""
    w = _w(n, k, n + k)
    ours, theirs = quantize_int4(w, native=kernel), quantize_int4(w)
    same = (ours.scale == theirs.scale) & (ours.low == theirs.low)
    assert float(same.float().mean()) > 0.99
    assert torch.allclose(_group_sse(ours.dequantize(), w), _group_sse(theirs.dequantize(), w), rtol=1e-4, atol=1e-12)
    rows = q4.empty_q4(n, k)  # written in row blocks, like a checkpoint's matrix
    quantize_int4(w[: n // 2], rows, 0, native=kernel)
    quantize_int4(w[n // 2 :], rows, n // 2, native=kernel)
    assert torch.equal(rows.q, ours.q) and torch.equal(rows.scale, ours.scale) and torch.equal(rows.low, ours.low)
