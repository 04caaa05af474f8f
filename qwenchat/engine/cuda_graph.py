"""Decoding on a CUDA GPU as replayed CUDA graphs.

A 0.5B model's decode step is some 400 small kernels: on an H200 they take 1.6 ms of GPU time,
but launching them one by one from Python took 10-20 ms, so the GPU idled most of each token.
A CUDA graph records the step's kernels once and launches them all with one call (1.9 ms a step
replayed there).

A graph replays fixed shapes and addresses, so the step it records reads its token and position
from small device tensors (`_Inputs`), writes the new keys/values with `index_copy_` at that
position, and attends over a fixed span of the cache: the positions up to the next multiple of
SPAN_STEP, the ones past the current position masked out. One graph is recorded per span (and per
cache) the first time a reply reaches it, so a 32K context holds at most 32 small graphs; each
recording costs a few eager steps.

Only plain floating-point weights are graphed: the quantized linears keep Python-side state (the
scratch's record of which weights it holds) that a replay would not update. Everything else
(prompts, other devices) takes the model's eager path, as does every step after a recording
failed (the reason kept in `GraphDecoder.failure`) or with QWENCHAT_CUDA_GRAPHS=0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from qwenchat.engine.cache import KVCache
from qwenchat.engine.device import env_switch

SPAN_STEP = 1024  # attention reads the cache in spans of this many positions
GRAPHS_ENV = "QWENCHAT_CUDA_GRAPHS"  # "0": decode eagerly (a way around a driver's graph bug)


@dataclass
class _Inputs:
    token: torch.Tensor  # (1, 1) int64
    pos: torch.Tensor  # (1,) int64


@dataclass
class _Recorded:
    graph: torch.cuda.CUDAGraph | None  # None: run eagerly (the static step without a graph)
    inputs: _Inputs
    logits: torch.Tensor  # (1, 1, V) float32, rewritten by each replay
    cache: tuple[torch.Tensor, torch.Tensor]  # the buffers it writes: kept alive while it exists


class GraphDecoder:
    """One decode step of `model` at a time, through a recorded graph per cache span."""

    def __init__(self, model: nn.Module, record: bool = True) -> None:
        """record=False runs the same static step eagerly (the tests' way to check it on a CPU)."""
        self.model = model
        self.record = record
        self.failure: str | None = None
        self._recorded: dict[int, _Recorded] = {}  # by span, for the cache in `_cache`
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def supports(device: torch.device, quantize: str, environ: Mapping[str, str] | None = None) -> bool:
        """A CUDA device and unquantized weights (see the module docstring), unless switched off."""
        if device.type != "cuda" or quantize != "none":
            return False
        return env_switch(GRAPHS_ENV, "decode eagerly", "recorded graphs", environ) is not False

    def step(self, token: torch.Tensor, cache: KVCache, pos: int) -> torch.Tensor | None:
        """token (1, 1) at position `pos` -> float32 logits (1, 1, V) (a fresh tensor), its keys
        and values written to `cache` as the eager step's are; None when graphs failed here (the
        caller then steps eagerly)."""
        if self.failure is not None:
            return None
        if self._cache is None or self._cache[0] is not cache.k or self._cache[1] is not cache.v:
            self._recorded, self._cache = {}, (cache.k, cache.v)  # another cache: the old graphs go
        span = min(cache.max_len, -(-(pos + 1) // SPAN_STEP) * SPAN_STEP)
        with _on(cache.k.device):
            rec = self._recorded.get(span)
            if rec is None:
                try:
                    rec = self._recorded[span] = self._prepare(token, cache, pos, span)
                except Exception as e:  # noqa: BLE001 - a driver or torch without graph support, or a
                    # recording this code gets wrong: the eager step is always right, so it takes over
                    # (test_cuda.py asserts no failure on a GPU; `failure` says why)
                    self.failure = f"{type(e).__name__}: {e}"
                    return None
            rec.inputs.token.copy_(token.view(1, 1))
            rec.inputs.pos.fill_(pos)
            if rec.graph is None:
                return static_step(self.model, rec.inputs, cache, span).clone()
            rec.graph.replay()
            return rec.logits.clone()

    def _prepare(self, token: torch.Tensor, cache: KVCache, pos: int, span: int) -> _Recorded:
        device = cache.k.device
        inputs = _Inputs(token.view(1, 1).clone(), torch.full((1,), pos, dtype=torch.long, device=device))
        if not self.record:
            return _Recorded(None, inputs, torch.empty(0), (cache.k, cache.v))
        # Warm-up runs (on a side stream, as recording requires) write this step's own keys and
        # values at `pos`, which the replay then writes again: nothing else in the cache moves.
        # The recording gets that stream too: torch's default one is made on whichever GPU came
        # first, and recording a second GPU's kernels there records nothing.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                static_step(self.model, inputs, cache, span)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            logits = static_step(self.model, inputs, cache, span)
        return _Recorded(graph, inputs, logits, (cache.k, cache.v))


def _on(device: torch.device):
    """The CUDA device as the current one (a model on cuda:1), or nothing to do elsewhere."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@torch.inference_mode()
def static_step(model: nn.Module, inputs: _Inputs, cache: KVCache, span: int) -> torch.Tensor:
    """The decode step with its position in a tensor and attention over `span` cache positions:
    the model's own layers (DecoderLayer.forward, each writing to a _Span), fixed shapes
    throughout -> float32 logits (1, 1, V)."""
    backbone = model.model
    x = backbone.embed_tokens(inputs.token)  # (1, 1, H)
    cos, sin = model.rope_cos.index_select(0, inputs.pos), model.rope_sin.index_select(0, inputs.pos)  # (1, D)
    unwritten = torch.arange(span, device=x.device) > inputs.pos  # (span,): positions not yet written
    for layer, keys, values in zip(backbone.layers, cache.layer_k, cache.layer_v):
        x = layer(x, cos, sin, _Span(keys, values, inputs.pos, span, unwritten), 0)
    return model.logits(backbone.norm(x))


@dataclass
class _Span:
    """A layer's keys/values for a recorded step (model.py's KVWriter): the new ones written at the
    position held in `pos`, by index (a recorded step cannot slice at a Python position); the
    fixed span attended to, its unwritten positions hidden."""

    keys: torch.Tensor
    values: torch.Tensor
    pos: torch.Tensor
    span: int
    unwritten: torch.Tensor

    def update(self, _pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys.index_copy_(2, self.pos, k)
        self.values.index_copy_(2, self.pos, v)
        return self.keys[:, :, : self.span], self.values[:, :, : self.span]
