"""int4 mode's output projection: the logits of a decode step from an int4 copy of the matrix,
with the largest of them recomputed from its int8 rows.

Why: decoding reads the whole output projection at every token, and on a small model it is a
large share of the bytes (Qwen2.5-0.5B: 136 MB of ~360 MB at int8). Stored int4 alone it costs
quality (benchmarks/int4_quality.py: perplexity 1.075x float32's against 1.059x with it int8), but
only the head of the distribution decides a greedy choice or a top-k / top-p sample. So the int4
copy ranks the vocabulary, and the `top` largest logits (model_build.py's EXACT_TOP_LOGITS) are
recomputed from the int8 rows (the rows the embedding looks up anyway, so no second full copy):
those logits are int8 mode's, up to the order of the float sums, and only the tail of the
distribution is int4's. A token that int8 would rank first but int4 ranks below `top` would be
missed; int4's logit error (measured on the real model: at most 1.85 over the whole vocabulary
in 214 steps) is below the gap between the first and the 64th logit of a real step (at least 3.2,
median 11.5), and int8's choice was among int4's 64 largest at every step. Under a grammar
(structured output) that allows only tokens ranked below the 64 largest, the choice among them
is made on int4's logits.

Prompts (more than DECODE_ROWS rows) are compute-bound, not bandwidth-bound: they take the int8
rows alone, so their logits (the quality guard's perplexity: chunks of hundreds of tokens) are
int8 mode's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qwenchat.engine.quantize import DECODE_ROWS, Int8Linear, QTensor
from qwenchat.engine.quantize_int4 import Int4Linear, Q4Tensor

KIND = "int8+int4"  # checkpoint.py / model_build.py's name for a matrix stored both ways


@dataclass
class HeadWeights:
    """The output projection stored twice: `exact` int8 (also the embedding's rows when tied),
    `fast` int4 (what decoding streams)."""

    exact: QTensor
    fast: Q4Tensor

    def to(self, device: torch.device) -> "HeadWeights":
        return HeadWeights(self.exact.to(device), self.fast.to(device))


class Int4Head(nn.Module):
    """x (..., K) -> logits (..., N): up to DECODE_ROWS rows, int4 products for all N outputs and
    the `top` largest of each row recomputed from the int8 rows; more rows, int8 alone."""

    def __init__(self, fast: Int4Linear, exact: Int8Linear, top: int) -> None:
        """fast: on the CPU with qwenchat's kernel (model_build.py builds this head only then)."""
        super().__init__()
        if fast.native is None:
            raise ValueError("int4 mode's output projection needs qwenchat's kernel")
        self.fast, self.exact = fast, exact
        self.top = min(top, exact.out_features)
        self.out_features, self.in_features = exact.out_features, exact.in_features

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] > DECODE_ROWS or x2.dtype != torch.float32:
            return self.exact(x, out)
        y = self.fast(x2)
        e = self.exact
        self.fast.native.top_logits(y, x2, e.qweight, e.scales, e.bias, self.top)  # torch's topk alone: ~0.5 ms
        y = y.view(*x.shape[:-1], self.out_features)
        return y if out is None else out.copy_(y)
