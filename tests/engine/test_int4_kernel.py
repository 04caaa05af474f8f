"""The int4 products (native/int4_kernel.c): against float64 products of the dequantized weights,
on the AVX2 path and the plain C one (forced, so both run on an AVX2 machine), for shapes with
partial chunks, groups and row blocks; the dequantization equals torch's bit for bit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from qwenchat.engine import int8_kernel
from qwenchat.engine.quantize import Scratch
from qwenchat.engine.quantize_int4 import CHUNK, Int4Linear, padded, quantize_int4
from tests.engine.test_int8_kernel import needs_kernel
from tests.engine.tolerance import sum_order_bound, within_sum_order

PATHS = ["avx2", "generic"]
SHAPES = [(1, 896, 896), (1, 64, 4864), (2, 133, 77), (1, 7, 3), (5, 70, 45), (7, 131, 29), (33, 66, 96), (1, 9, 32)]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> int8_kernel.Int8Kernel:
    status = int8_kernel._load(tmp_path_factory.mktemp("kernels"))
    assert status.kernel is not None, status.reason
    yield status.kernel
    status.kernel.use_generic_int4(False)


@pytest.fixture(params=PATHS)
def path_kernel(kernel, request) -> int8_kernel.Int8Kernel:
    assert kernel.use_generic_int4(request.param == "generic") == request.param
    assert kernel.int4_path == request.param
    yield kernel
    kernel.use_generic_int4(False)


def _w(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 0.1 + 0.01 * torch.rand(n, 1, generator=g)


def x_rounding_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(M, N): how far rounding x to 16-bit integers per 32 columns (the kernel's activations) can
    move x @ w.T: each x[k] moves by at most half a step, step = its chunk's max |x| / 32767."""
    m, k = x.shape
    xp = torch.zeros(m, padded(k, CHUNK))
    xp[:, :k] = x.abs()
    step = xp.view(m, -1, CHUNK).amax(-1).repeat_interleave(CHUNK, dim=1)[:, :k] / 32767
    return ((step.double() / 2) @ w.abs().double().t()).float()


@needs_kernel
@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_products_equal_float64_on_the_dequantized_weights(path_kernel, m, n, k):
    w4 = quantize_int4(_w(n, k, n * k))
    w = w4.dequantize()
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + k))
    bias = torch.randn(n)
    want = x.double() @ w.double().t() + bias.double()
    got = path_kernel.int4_matmul(x, w4, bias)
    assert got.shape == (m, n) and got.dtype == torch.float32
    bound = sum_order_bound(x, w) + x_rounding_bound(x, w) + 4 * 2.0**-24 * bias.abs()
    assert within_sum_order(got, want, bound)
    assert within_sum_order(path_kernel.int4_matmul(x, w4, None) + bias, got, 2 * bound)


@needs_kernel
@pytest.mark.parametrize(("m", "n", "k"), SHAPES)
def test_the_two_paths_differ_only_in_the_order_of_float_sums(kernel, m, n, k):
    w4 = quantize_int4(_w(n, k, 7 * n + k))
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k))
    kernel.use_generic_int4(False)
    fast = kernel.int4_matmul(x, w4, None)
    kernel.use_generic_int4(True)
    plain = kernel.int4_matmul(x, w4, None)
    kernel.use_generic_int4(False)
    w = w4.dequantize()
    # both sum the same exact integer chunk products; only the float sums of chunks and groups differ
    assert within_sum_order(fast, plain, sum_order_bound(x, w) + 2 * x_rounding_bound(x, w))


@needs_kernel
@pytest.mark.parametrize(("n", "k"), [(70, 45), (9, 896), (3, 29), (130, 64)])
def test_dequantize_equals_torchs_bit_for_bit(path_kernel, n, k):
    w4 = quantize_int4(_w(n, k, k))
    assert torch.equal(path_kernel.int4_dequantize(w4, torch.empty(n, k)), w4.dequantize())


@needs_kernel
def test_a_wrong_column_count_is_refused(kernel):
    w4 = quantize_int4(_w(8, 64, 1))
    with pytest.raises(ValueError, match="columns"):
        kernel.int4_matmul(torch.randn(1, 32), w4, None)


@needs_kernel
def test_the_environment_variable_forces_the_plain_path_at_load(tmp_path):
    code = (
        "import sys; from pathlib import Path; from qwenchat.engine import int8_kernel as k\n"
        "s = k.load(Path(sys.argv[1])); print(s.kernel.int4_path)"
    )
    env = {"QWENCHAT_INT4_GENERIC": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "generic"
    env.pop("QWENCHAT_INT4_GENERIC")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "avx2"


@needs_kernel
@pytest.mark.parametrize("rows", [1, 4, 96, 97, 300])
def test_linear_gives_the_dequantized_product_for_any_row_count(kernel, rows):
    """Up to NATIVE_ROWS rows run the kernel, more dequantize into the scratch for a float
    product: both within rounding of the same function."""
    w4 = quantize_int4(_w(200, 96, rows))
    bias = torch.randn(200)
    lin = Int4Linear(w4, bias, Scratch(kernel), kernel)
    x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows))
    w = w4.dequantize()
    want = x.double() @ w.double().t() + bias.double()
    bound = sum_order_bound(x, w) + x_rounding_bound(x, w) + 4 * 2.0**-24 * bias.abs()
    assert within_sum_order(lin(x), want, bound)
    out = torch.empty(rows, 200)
    assert lin(x, out=out) is out and within_sum_order(out, want, bound)
    torch_only = Int4Linear(w4, bias, Scratch(None), None)  # no kernel: torch's dequantization
    assert within_sum_order(torch_only(x), want, sum_order_bound(x, w) + 4 * 2.0**-24 * bias.abs())
