"""Weight-only int8 quantization, and loading a checkpoint straight into its final form.

Contract
--------
- `quantize_int8(w)`: symmetric, per output channel (row): `w[n] ~= q[n] * scale[n]` with
  `q` int8 in [-127, 127] and `scale` = max|w[n]| / 127 rounded up to a bfloat16 value (kept as
  float32). The rounding error of each element is at most `scale[n] / 2`. Rows are processed in blocks so a 136M-parameter matrix
  needs no full-size float temporaries.
- `Int8Linear`: `y = x W^T + b` with W held as int8 + scales. Few rows (decode: one token; with
  our kernel also short prompts) run a kernel that reads the int8 weights directly; many rows
  (long prompts) dequantize the weight block by block into a shared scratch buffer and use the
  ordinary float matrix product, which wins once the rows are many enough to pay for the
  dequantization; the buffer remembers what it holds, so a prompt's row blocks fed in turn
  dequantize each weight once (`Scratch`), and `out=` takes a reused result buffer. Both paths compute the same function, so a prompt fed in one piece or token
  by token sees the same model:
  - with qwenchat's kernel (int8_kernel.py; float32 activations on the CPU), exactly the
    dequantized float32 product, up to the order of the sums;
  - with torch's `_weight_int8pack_mm` (the fallback: bfloat16 activations, float32 sums,
    bfloat16 results), the prefill path rounds its inputs and outputs to bfloat16 the same way,
    and the output projection recomputes its largest outputs in float32 (see `exact_top`).
  The exception, on CPUs with matrix units (AMX; `Scratch.amx_prompts`, chosen by
  device.amx_prompts): rows past AMX_NATIVE_ROWS (prompts) are rounded to int8, one scale per row
  (a second int8 row where one value dwarfs the rest), and multiplied on the int8 tiles
  (native/int8_prompts.c); a prompt's keys and values then differ from a token-by-token feed by
  that rounding (tests/engine/test_amx_prompts.py bounds it; the quality guard's figures in
  BENCHMARKS.md).
  Other devices always take the dequantizing path (correct, not tuned).
- `Int8Embedding`: rows gathered as int8, then scaled.

Reading checkpoints tensor by tensor (and the on-disk int8 cache) lives in checkpoint.py.

What this module does not know: which layers to quantize (model_build.py decides), or whether a lossy
mode is acceptable (the quality guard in tests/real/test_quality_guard.py checks that).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qwenchat.engine import hugepages
from qwenchat.engine.int8_kernel import Int8Kernel

QUANT_MODES = ("none", "int8")
BLOCK_ELEMS = 1 << 24  # rows per dequantization/quantization block: ~16M elements (64 MB float32)
DECODE_ROWS = 4  # at most this many rows use torch's int8 kernel; more rows dequantize
NATIVE_ROWS = 96  # ours beats dequantizing up to ~128 rows (2-core AVX2: 174 vs 437 ms at 32)
# With int8 matrix units (Scratch.amx_prompts) their products win from two rows: on an AMX Xeon,
# 2 cores, a layer's products at 2 rows 1.05 ms ours, 0.47 ms on the tiles; at 16, 3.08 and 0.47
# (benchmarks/prefill_products.py --rows 1,2,4,16); one row streams the weights either way, and
# decoding keeps float32 rows.
AMX_NATIVE_ROWS = 1


@dataclass
class QTensor:
    """An int8 matrix with one float32 scale per row: value[n, k] ~= q[n, k] * scale[n]."""

    q: torch.Tensor  # (N, K) int8
    scale: torch.Tensor  # (N,) float32

    @property
    def shape(self) -> torch.Size:
        return self.q.shape

    def to(self, device: torch.device) -> "QTensor":
        return QTensor(self.q.to(device), self.scale.to(device))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.q.to(dtype) * self.scale[:, None].to(dtype)


def quantize_int8(w: torch.Tensor, out: QTensor | None = None, row0: int = 0) -> QTensor:
    """Quantize the rows of `w` (N, K); with `out`, write them into out at rows row0.."""
    n, k = w.shape
    if out is None:
        out = QTensor(torch.empty(n, k, dtype=torch.int8, device=w.device), torch.empty(n, device=w.device))
    step = max(1, BLOCK_ELEMS // max(k, 1))
    for a in range(0, n, step):
        blk = w[a : a + step].to(torch.float32, copy=True)  # never scale the caller's tensor in place
        scale = bf16_ceil(blk.abs().amax(dim=1).div_(127.0).clamp_(min=1e-30))  # (rows,)
        out.q[row0 + a : row0 + a + blk.shape[0]] = blk.div_(scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
        out.scale[row0 + a : row0 + a + blk.shape[0]] = scale
    return out


def bf16_ceil(x: torch.Tensor) -> torch.Tensor:
    """The smallest bfloat16 values >= x (x > 0), as float32: the int8 kernel takes bfloat16
    scales, so scales are chosen exactly representable (no extra rounding, |q| stays <= 127)."""
    b = x.to(torch.bfloat16)
    low = b.float() < x
    b[low] = (b[low].view(torch.int16) + 1).view(torch.bfloat16)
    return b.float()


def cat_rows(parts: list[QTensor]) -> QTensor:
    return QTensor(hugepages.cat([p.q for p in parts]), torch.cat([p.scale for p in parts]))


class Scratch:
    """Reusable float buffers for dequantized weight blocks, one per (device, dtype, slot), shared
    by all layers of a model (allocating tens of MB per matrix product costs page faults every
    time). With qwenchat's kernel, float32 blocks are dequantized by it in one pass.

    Each slot remembers which weight block it holds, so a weight applied to several row blocks
    in a row (a long prompt's MLP, block by block) is dequantized once; the MLP's two matrices
    take different slots, so alternating between them evicts neither."""

    def __init__(self, native: Int8Kernel | None = None, amx_prompts: bool = False) -> None:
        """amx_prompts: the products of float32 rows beyond the native kernel's run on the matrix
        units (device.amx_prompts): int8 weights on our kernel's int8 tiles, int4 in bfloat16."""
        self._bufs: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}
        self._held: dict[tuple[torch.device, torch.dtype, int], tuple] = {}
        self.native = native
        self.amx_prompts = amx_prompts

    def native_rows(self, amx_from: int = AMX_NATIVE_ROWS) -> int:
        """The most float32 rows the native kernel takes; more go to the matrix units when
        `amx_prompts` (amx_from: the rows from which they win for a kind of weights), else
        dequantize."""
        return min(amx_from, NATIVE_ROWS) if self.amx_prompts else NATIVE_ROWS

    def native_takes(self, x2: torch.Tensor, amx_from: int = AMX_NATIVE_ROWS) -> bool:
        """Whether a linear with the native kernel hands these rows (M, K) to it."""
        return x2.dtype == torch.float32 and x2.shape[0] <= self.native_rows(amx_from)

    def matrix_rows(self, x2: torch.Tensor, amx_from: int = AMX_NATIVE_ROWS) -> bool:
        """Whether the product of these rows runs on the matrix units: a prompt's float32 rows,
        more than `amx_from`, when `amx_prompts` (between the native kernel's rows and those, the
        float product of dequantized weights)."""
        return self.amx_prompts and x2.dtype == torch.float32 and x2.shape[0] > amx_from

    def dequantize(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, slot: int = 0) -> torch.Tensor:
        return self.held((q, scale), q.shape, dtype, slot, lambda w: self._fill(q, scale, w))

    def held(
        self, parts: tuple[torch.Tensor, ...], shape: torch.Size, dtype: torch.dtype, slot: int,
        fill: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The slot's buffer viewed as `shape`: as it is when it already holds what `parts` (the
        quantized tensors) dequantize to, else after `fill(buffer)` wrote it."""
        n = math.prod(shape)
        key = (parts[0].device, dtype, slot)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = self._bufs[key] = torch.empty(max(n, 1), dtype=dtype, device=parts[0].device)
            self._held.pop(key, None)
        w = buf[:n].view(shape)
        ids = tuple(_identity(t) for t in parts)
        if key in self._held and self._held[key][0] == ids:
            return w
        self._held[key] = (ids, parts)  # the tensors themselves pin the addresses
        return fill(w)

    def _fill(self, q: torch.Tensor, scale: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """w = q * scale[:, None], in place."""
        if self.native is not None and w.dtype == torch.float32 and q.device.type == "cpu":
            return self.native.dequantize(q, scale, w)
        return w.copy_(q).mul_(scale[:, None].to(w.dtype))  # ~7x faster than a mixed-dtype mul


def _identity(t: torch.Tensor) -> tuple:
    """Where a tensor's data lies and its in-place write count: equal for the same unchanged data
    (while the tensor is referenced its address cannot be reused by another)."""
    try:
        version = t._version
    except RuntimeError:  # an inference tensor keeps no version counter
        version = None
    return t.data_ptr(), tuple(t.shape), t.stride(), version


def _int8_kernel_ok(device: torch.device) -> bool:
    return device.type == "cpu" and hasattr(torch, "_weight_int8pack_mm")


class Int8Linear(nn.Module):
    def __init__(
        self,
        weight: QTensor,
        bias: torch.Tensor | None,
        scratch: Scratch,
        exact_top: int = 0,
        native: Int8Kernel | None = None,
        slot: int = 0,
    ) -> None:
        """native: qwenchat's kernel, used for up to Scratch.native_rows float32 rows on the CPU (None:
        torch's, for up to DECODE_ROWS). slot: the scratch slot its dequantized weight goes to.
        exact_top > 0 (the output projection, torch's kernel only): its bfloat16 results are
        exact enough to find the `exact_top` largest outputs per row, which are then recomputed
        in float32, so greedy choices and the head of the sampling distribution are not decided
        by bfloat16 rounding (a logit of 20 is rounded to a multiple of 0.125 in bfloat16)."""
        super().__init__()
        self.register_buffer("qweight", weight.q)  # (N, K) int8
        self.register_buffer("scales", weight.scale)  # (N,) float32
        self.register_buffer("scales_bf16", weight.scale.to(torch.bfloat16))
        self.register_buffer("bias", bias)
        self.scratch, self.slot = scratch, slot
        self.out_features, self.in_features = weight.q.shape
        on_cpu = weight.q.device.type == "cpu"
        self.native = native if on_cpu else None
        self.kernel = self.native is None and _int8_kernel_ok(weight.q.device)  # torch's
        self.exact_top = exact_top if self.kernel else 0
        # the int8 tiles, or (a CPU without them, forced: tests) the same numbers in plain loops;
        # a shape the tiles cannot take keeps the native kernel for short prompts, as without them
        n, k = weight.q.shape
        self.int8_rows = self.native is not None and (self.native.amx_fits(k, n) or not self.native.amx)
        self.amx_from = AMX_NATIVE_ROWS if self.int8_rows else NATIVE_ROWS

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., K) -> (..., N); `out` (contiguous, that shape) receives the result, so a long
        prompt's products reuse one buffer instead of page-faulting a fresh one each time."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if self.native is not None and self.scratch.native_takes(x2, self.amx_from):
            y = self.native.matmul(x2, self.qweight, self.scales, self.bias)
        elif self.int8_rows and self.scratch.matrix_rows(x2, self.amx_from):
            into = None if out is None else out.view(x2.shape[0], self.out_features)
            y = self.native.int8_prompt_matmul(x2, self.qweight, self.scales, self.bias, into, self.native.amx)
        elif self.kernel and x2.shape[0] <= DECODE_ROWS:
            y = self._int8pack_matmul(x2)
            y = y if self.bias is None else y + self.bias
        else:
            y = self._dequantized_matmul(x2, None if out is None else out.view(x2.shape[0], self.out_features))
            y = y if self.bias is None else y.add_(self.bias)  # y is ours (fresh or `out`)
        if out is None:
            return y.view(*lead, self.out_features)
        return out if y.data_ptr() == out.data_ptr() else out.copy_(y.view(out.shape))

    def _int8pack_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        xb = x2.to(torch.bfloat16)
        y = torch._weight_int8pack_mm(xb, self.qweight, self.scales_bf16).to(x2.dtype)
        if self.exact_top:
            idx = y.topk(min(self.exact_top, self.out_features), dim=-1).indices  # (M, k)
            rows = self.qweight[idx].to(x2.dtype)  # (M, k, K)
            exact = torch.matmul(rows, xb.to(x2.dtype).unsqueeze(-1)).squeeze(-1) * self.scales[idx]
            y.scatter_(-1, idx, exact)
        return y

    def _dequantized_matmul(self, x2: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x2.dtype
        emulate = self.kernel  # torch's kernel's numerics: bfloat16 inputs and outputs, float32 sums
        if emulate:
            x2 = x2.to(torch.bfloat16).to(dtype)
        n, k = self.qweight.shape
        step = max(1, BLOCK_ELEMS // k)
        y = torch.empty(x2.shape[0], n, dtype=dtype, device=x2.device) if out is None else out
        if n <= step:
            torch.mm(x2, self.scratch.dequantize(self.qweight, self.scales, dtype, self.slot).t(), out=y)
        else:
            for a in range(0, n, step):
                w = self.scratch.dequantize(self.qweight[a : a + step], self.scales[a : a + step], dtype, self.slot)
                y[:, a : a + w.shape[0]] = F.linear(x2, w)
        return y.copy_(y.to(torch.bfloat16)) if emulate and not self.exact_top else y


class Int8Embedding(nn.Module):
    def __init__(self, weight: QTensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("qweight", weight.q)  # (V, H) int8
        self.register_buffer("scales", weight.scale)  # (V,) float32
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].to(self.dtype) * self.scales[ids].unsqueeze(-1).to(self.dtype)
