"""Weight-only int4 quantization: group-wise affine 4-bit weights (`--quantize int4`).

Contract
--------
- `quantize_int4(w)`: each row of `w` (N, K) is cut into groups of GROUP consecutive columns
  (the last one padded with zeros to a whole group); a group's weights are
  `w ~= scale * q + low` with `q` in 0..15 and `scale`, `low` bfloat16 (one each per group and
  row). `scale` and `low` are rounded to bfloat16 *before* `q` is chosen, so the dequantized
  value is exactly `scale * q + low` in float32 arithmetic. The grid is the one with the least
  squared error found by a range search and then Lloyd steps (`_fit`, `_refine`); without the
  steps and the search each element's rounding error is at most `scale / 2`.
- Packing: every 32 columns of a row (a "chunk") take 16 bytes; byte j holds column j of the
  chunk in its low nibble and column j + 16 in its high one. A kernel then gets a chunk's first
  16 weights from one AND and the other 16 from one shift and AND (llama.cpp's Q4_0 layout).
- Bytes per weight: 4 bits + 2 x 16 bits per GROUP weights = 5 bits at GROUP 32 (int8: 8 bits
  + 32 per row); a decode step streams ~0.6x the bytes of int8.

Why affine (a min per group) and not symmetric: on the real model, measured with the weights
dequantized (benchmarks/int4_quality.py), affine groups of 32 keep perplexity closer to float32's
than symmetric ones of the same size, for the same kernel cost (the min's term is one dot
product per row over the groups, see native/int4_kernel.c).

What this module does not know: which matrices are int4 (model_build.py decides) or how the products
run (int4_linear.py and the C kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qwenchat.engine import hugepages
from qwenchat.engine.int8_kernel import Int8Kernel
from qwenchat.engine.quantize import BLOCK_ELEMS as BLOCK_ELEMS_PRODUCT
from qwenchat.engine.quantize import Scratch

GROUP = 32  # columns per scale/min pair; a multiple of CHUNK
CHUNK = 32  # columns per 16 packed bytes
MAX_GROUP = 256  # the C quantizer's bound
BLOCK_ELEMS = 1 << 22  # elements quantized at a time (bounded float temporaries)
# With matrix units (Scratch.amx_prompts) int4 rows past this many dequantize to bfloat16 (fewer
# take the native kernel up to NATIVE_ROWS, then float32 products): converting every weight costs
# ~0.5 s a prompt, so on an AMX Xeon (2 cores) a prompt's prefill in bfloat16 took 547 ms at 20
# rows against 174 ms, broke even near 200 rows, and won from 256 (748 against 828 ms).
INT4_AMX_ROWS = 224
RANGE_SEARCH = (1.0, 0.95, 0.9, 0.85)  # fractions of a group's range tried; the least squared error wins
# Lloyd steps after the search (_refine): on the real test model int4 mode's perplexity is 1.048x
# float32's without them and 1.023x with 4 (benchmarks/int4_quality.py, engine-int4-emb8); 10 steps
# gave the same, and after the steps a wider range search changes no grid.
REFINE_STEPS = 4


@dataclass
class Q4Tensor:
    """Packed int4 weights of a (rows, cols) matrix; see the module's contract."""

    q: torch.Tensor  # (N, Kp // 2) uint8, Kp = cols rounded up to GROUP
    scale: torch.Tensor  # (N, Kp // GROUP) bfloat16
    low: torch.Tensor  # (N, Kp // GROUP) bfloat16
    cols: int

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.q.shape[0], self.cols))

    @property
    def group(self) -> int:
        return self.q.shape[1] * 2 // self.scale.shape[1]

    def to(self, device: torch.device) -> "Q4Tensor":
        return Q4Tensor(self.q.to(device), self.scale.to(device), self.low.to(device), self.cols)

    def rows(self, a: int, b: int) -> "Q4Tensor":
        return Q4Tensor(self.q[a:b], self.scale[a:b], self.low[a:b], self.cols)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, cols) in `dtype`: scale * q + low, computed in float32."""
        n = self.q.shape[0]
        q = unpack(self.q).float()  # (N, Kp)
        groups = self.scale.shape[1]
        w = q.view(n, groups, -1).mul_(self.scale.float()[:, :, None]).add_(self.low.float()[:, :, None])
        return w.view(n, -1)[:, : self.cols].to(dtype)


def padded(cols: int, group: int = GROUP) -> int:
    return -(-cols // group) * group


def empty_q4(n: int, k: int, group: int = GROUP, device: torch.device | str = "cpu") -> Q4Tensor:
    kp = padded(k, group)
    return Q4Tensor(
        torch.empty(n, kp // 2, dtype=torch.uint8, device=device),
        torch.empty(n, kp // group, dtype=torch.bfloat16, device=device),
        torch.empty(n, kp // group, dtype=torch.bfloat16, device=device),
        k,
    )


def quantize_int4(
    w: torch.Tensor, out: Q4Tensor | None = None, row0: int = 0, group: int = GROUP, native: Int8Kernel | None = None
) -> Q4Tensor:
    """Quantize the rows of `w` (N, K); with `out`, write them into out at rows row0..; with
    `native` (CPU tensors), in C: the same fit, ~50x faster (native/int4_quantize.c)."""
    if group % CHUNK or group > MAX_GROUP:
        raise ValueError(f"the int4 group size must be a multiple of {CHUNK} up to {MAX_GROUP}, not {group}")
    n, k = w.shape
    out = empty_q4(n, k, group, w.device) if out is None else out
    if native is not None and w.device.type == "cpu" and out.q.device.type == "cpu":
        native.int4_quantize(w, out.rows(row0, row0 + n), RANGE_SEARCH, REFINE_STEPS)
        return out
    kp = padded(k, group)
    step = max(1, BLOCK_ELEMS // kp)
    for a in range(0, n, step):
        blk = torch.zeros(min(step, n - a), kp, dtype=torch.float32, device=w.device)
        blk[:, :k] = w[a : a + step]
        g = blk.view(blk.shape[0], kp // group, group)  # (rows, groups, group)
        valid = (torch.arange(kp, device=w.device) < k).view(1, kp // group, group)
        scale, low, q, err = _fit(g, valid)
        scale, low, q = _refine(g, valid, scale, low, q, err)
        rows = slice(row0 + a, row0 + a + blk.shape[0])
        out.q[rows] = pack(q.view(blk.shape[0], kp))
        out.scale[rows], out.low[rows] = scale, low
    return out


def _fit(g: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(scale, low) bfloat16, q (float codes 0..15) and the squared error for groups g (rows,
    groups, group): for each fraction of the group's [min, max] range in RANGE_SEARCH (clipping the
    extremes a little often lowers the error of all the others), the grid is fitted and the one
    with the least squared error kept. The padding columns (not `valid`) do not count."""
    big = torch.finfo(torch.float32).max
    lo_all = torch.where(valid, g, big).amin(-1)
    hi_all = torch.where(valid, g, -big).amax(-1)
    lo_all, hi_all = torch.minimum(lo_all, hi_all), torch.maximum(lo_all, hi_all)  # all-padding groups: 0, 0
    mid = (lo_all + hi_all) / 2
    best = None
    for frac in RANGE_SEARCH:
        lo, hi = mid + (lo_all - mid) * frac, mid + (hi_all - mid) * frac
        low = _bf16_floor(lo)
        scale = _bf16_ceil(((hi - low.float()) / 15).clamp_(min=1e-30))
        q, err = _codes(g, valid, scale, low)
        best = [scale, low, q, err] if best is None else _better(best, [scale, low, q, err])
    return tuple(best)


def _refine(g: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor, low: torch.Tensor, q: torch.Tensor,
            err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Lloyd steps (like k-means on a 16-point grid): the least-squares (scale, low) for the codes q,
    rounded to bfloat16, then the codes for that grid, kept where the squared error falls. A
    group that no step improves keeps the search's grid. Moments in float64, like the C version."""
    x, v = g.double(), valid.double()
    count = v.sum(-1).clamp_(min=1)
    best = [scale, low, q, err]
    for _ in range(REFINE_STEPS):
        qd = best[2].double()
        qm, xm = (qd * v).sum(-1) / count, (x * v).sum(-1) / count
        dq = (qd - qm[..., None]) * v
        var, cov = (dq * dq).sum(-1), (dq * (x - xm[..., None])).sum(-1)
        fitted = cov / var.clamp(min=1e-300)
        s2 = fitted.float().to(torch.bfloat16)
        l2 = (xm - fitted * qm).float().to(torch.bfloat16)
        usable = (var > 0) & (cov > 0) & (s2.float() > 0)
        s2 = torch.where(usable, s2, best[0])  # an unusable step: the old grid again, never better
        l2 = torch.where(usable, l2, best[1])
        best = _better(best, [s2, l2, *_codes(g, valid, s2, l2)])
    return best[0], best[1], best[2].to(torch.uint8)


def _codes(g: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest codes 0..15 of the grid (scale, low) for groups g, and their squared errors."""
    s, lo = scale.float()[..., None], low.float()[..., None]
    q = ((g - lo) / s).round_().clamp_(0, 15)
    return q, ((q * s + lo - g) ** 2 * valid).sum(-1)


def _better(best: list[torch.Tensor], new: list[torch.Tensor]) -> list[torch.Tensor]:
    """[scale, low, q, err] per group: the new fit where its error is lower."""
    win = new[3] < best[3]
    return [torch.where(win[..., None] if i == 2 else win, n, b) for i, (b, n) in enumerate(zip(best, new))]


def _bf16_ceil(x: torch.Tensor) -> torch.Tensor:
    """The smallest bfloat16 values >= x (x > 0): the grid then still reaches the range's top."""
    b = x.to(torch.bfloat16)
    low = b.float() < x
    b[low] = (b[low].view(torch.int16) + 1).view(torch.bfloat16)
    return b


def _bf16_floor(x: torch.Tensor) -> torch.Tensor:
    """The largest bfloat16 values <= x: a group's minimum then lies on or above its grid's
    first step, so no weight is clipped by the rounding of the minimum."""
    b = x.to(torch.bfloat16)
    high = b.float() > x
    bits = b[high].view(torch.int16)
    # one step down: a smaller magnitude for positives, a larger one for negatives (and -0 for 0)
    b[high] = torch.where(bits > 0, bits - 1, torch.where(bits == 0, torch.full_like(bits, -32767), bits + 1)).view(torch.bfloat16)
    return b


def pack(q: torch.Tensor) -> torch.Tensor:
    """q (N, Kp) values 0..15 -> (N, Kp // 2) bytes, chunk by chunk (see the contract)."""
    n, kp = q.shape
    c = q.to(torch.uint8).view(n, kp // CHUNK, 2, CHUNK // 2)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(n, kp // 2)


def unpack(p: torch.Tensor) -> torch.Tensor:
    """The inverse of pack: (N, Kp // 2) bytes -> (N, Kp) uint8 values 0..15."""
    n, half = p.shape
    c = p.view(n, half // (CHUNK // 2), 1, CHUNK // 2)
    return torch.cat([c & 15, c >> 4], dim=2).reshape(n, half * 2)


def cat_rows(parts: list[Q4Tensor]) -> Q4Tensor:
    return Q4Tensor(
        hugepages.cat([p.q for p in parts]), torch.cat([p.scale for p in parts]), torch.cat([p.low for p in parts]),
        parts[0].cols,
    )


class Int4Linear(nn.Module):
    """y = x W^T + b with W int4 (Q4Tensor). Up to Scratch.native_rows float32 rows on the CPU run
    qwenchat's kernel on the packed weights (x rounded to 16-bit integers per 32 columns, see
    native/int4_kernel.c); more rows, or no kernel, dequantize W block by block into the shared
    scratch (once per prompt chunk, like Int8Linear) for a float product."""

    def __init__(self, weight: Q4Tensor, bias: torch.Tensor | None, scratch: Scratch, native: Int8Kernel | None = None,
                 slot: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("qweight", weight.q)  # (N, Kp/2) uint8
        self.register_buffer("scales", weight.scale)  # (N, Kp/G) bfloat16
        self.register_buffer("lows", weight.low)  # (N, Kp/G) bfloat16
        self.register_buffer("bias", bias)
        self.cols = weight.cols
        self.scratch, self.slot = scratch, slot
        self.out_features, self.in_features = weight.q.shape[0], weight.cols
        self.native = native if weight.q.device.type == "cpu" else None

    @property
    def weight4(self) -> Q4Tensor:
        return Q4Tensor(self.qweight, self.scales, self.lows, self.cols)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., K) -> (..., N); `out` (contiguous, that shape) receives the result."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if self.native is not None and self.scratch.native_takes(x2, INT4_AMX_ROWS):
            y = self.native.int4_matmul(x2, self.weight4, self.bias)
        else:
            y = self._dequantized_matmul(x2, None if out is None else out.view(x2.shape[0], self.out_features))
            y = y if self.bias is None else y.add_(self.bias)
        if out is None:
            return y.view(*lead, self.out_features)
        return out if y.data_ptr() == out.data_ptr() else out.copy_(y.view(out.shape))

    def _dequantized_matmul(self, x2: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """Float products with the dequantized weights: in bfloat16 (rows and weights rounded to it,
        sums in float32) when the scratch says so (Scratch.matrix_rows), else in x2's dtype."""
        n = self.out_features
        step = max(1, BLOCK_ELEMS_PRODUCT // self.in_features)
        dtype = torch.bfloat16 if self.scratch.matrix_rows(x2, INT4_AMX_ROWS) else x2.dtype
        xin = x2.to(dtype)
        y = torch.empty(x2.shape[0], n, dtype=x2.dtype, device=x2.device) if out is None else out
        for a in range(0, n, step):
            w = self._dequantized(self.weight4.rows(a, a + step), dtype)
            if n <= step and dtype == y.dtype:
                torch.mm(xin, w.t(), out=y)
            else:
                y[:, a : a + w.shape[0]] = F.linear(xin, w)
        return y

    def _dequantized(self, w4: Q4Tensor, dtype: torch.dtype) -> torch.Tensor:
        def fill(buf: torch.Tensor) -> torch.Tensor:
            if self.native is not None and dtype == torch.float32:
                return self.native.int4_dequantize(w4, buf)
            return buf.copy_(w4.dequantize(dtype))

        return self.scratch.held((w4.q, w4.scale, w4.low), w4.shape, dtype, self.slot, fill)


class Int4Embedding(nn.Module):
    def __init__(self, weight: Q4Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("qweight", weight.q)
        self.register_buffer("scales", weight.scale)
        self.register_buffer("lows", weight.low)
        self.cols, self.dtype = weight.cols, dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = Q4Tensor(self.qweight[flat], self.scales[flat], self.lows[flat], self.cols)
        return rows.dequantize(self.dtype).view(*ids.shape, self.cols)
