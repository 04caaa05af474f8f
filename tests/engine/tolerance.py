"""How far two float32 computations of the same matrix product may differ: only the order of
their sums differs (another kernel, another block size, another thread count, AVX2 against
AVX-512), so tests bound the difference by what rounding allows instead of a fixed 1e-5."""

from __future__ import annotations

import torch

EPS32 = 2.0**-24  # float32's unit roundoff


def sum_order_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(M, N): the most two float32 evaluations of x @ w.T (x (M, K), w (N, K)) can differ.
    Each is within K * eps * (|x| @ |w|.T) of the exact product (the standard bound for a
    recursive or blocked sum of K terms), so the two are within twice that of each other."""
    k = x.shape[-1]
    return 2 * k * EPS32 * (x.abs().double() @ w.abs().double().t()).float()


def within_sum_order(got: torch.Tensor, want: torch.Tensor, bound: torch.Tensor) -> bool:
    return bool(((got.double() - want.double()).abs() <= bound.double() + 1e-30).all())
