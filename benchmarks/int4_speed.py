"""Decode speed of `--quantize int4` against int8 on this machine, A/B interleaved in one process
(a shared machine's load moves both alike): each round decodes the same forced tokens with the
int8 engine, then the int4 one (the order alternates every round), and the ratio of each round
is printed, with the medians. Also the matrix products alone on the real shapes.

    .venv/bin/python benchmarks/int4_speed.py [--model DIR] [--rounds 7] [--tokens 64]

The weight caches go to --cache (default: beside the test model, where the quality guard keeps
them), so only the first run quantizes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwenchat.engine.chat import ChatEngine  # noqa: E402

MODEL = Path.home() / ".cache" / "qwenchat-tests" / "imported-fp32"
PROMPT = "Write a Python function that checks whether a string is a palindrome, with a docstring and tests."


def decode_tok_s(engine: ChatEngine, ids: list[int], forced: list[int]) -> float:
    model, cache = engine.model, engine.cache
    cache.reset()
    model(torch.tensor([ids]), cache, 0)
    pos = len(ids)
    t0 = time.perf_counter()
    for i, tok in enumerate(forced):
        model(torch.tensor([[tok]]), cache, pos + i)
    dt = time.perf_counter() - t0
    cache.reset()
    return len(forced) / dt


def product_ms(engine: ChatEngine, reps: int) -> float:
    """One decode step's matrix products alone (every layer's four, then the output projection)."""
    m = engine.model
    mods = [mod for layer in m.model.layers for mod in (layer.self_attn.qkv_proj, layer.self_attn.o_proj,
                                                         layer.mlp.gate_up_proj, layer.mlp.down_proj)]  # fmt: skip
    xs = [torch.randn(1, mod.in_features) for mod in mods]
    x_head = torch.randn(1, m.lm_head.in_features)
    t0 = time.perf_counter()
    for _ in range(reps):
        for mod, x in zip(mods, xs):
            mod(x)
        m.lm_head(x_head)
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--cache", type=Path, default=MODEL.parent / "weight-caches")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    kernels = Path("/tmp/qwenchat-int4-bench-kernels")
    engines = {}
    for mode in ("int8", "int4"):
        t0 = time.perf_counter()
        engines[mode] = ChatEngine.load(args.model, device="cpu", quantize=mode, max_context=2048,
                                        kernel_dir=kernels, int8_cache_dir=args.cache)  # fmt: skip
        print(f"{mode}: loaded in {time.perf_counter() - t0:.1f} s; {engines[mode].info.placement_reason}", flush=True)
    ids = engines["int8"].tokenizer.encode_plain(PROMPT)
    forced = [int(t) for t in torch.randint(100, 20000, (args.tokens,), generator=torch.Generator().manual_seed(0))]
    print(f"cpu: {_cpu()}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")
    ratios, speeds = [], {"int8": [], "int4": []}
    for r in range(args.rounds):
        order = ("int8", "int4") if r % 2 == 0 else ("int4", "int8")
        got = {mode: decode_tok_s(engines[mode], ids, forced) for mode in order}
        for mode in got:
            speeds[mode].append(got[mode])
        ratios.append(got["int4"] / got["int8"])
        print(f"round {r + 1}: int8 {got['int8']:.1f} tok/s, int4 {got['int4']:.1f} tok/s, "
              f"int4/int8 {ratios[-1]:.2f}x (load average {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
    print(f"decode medians: int8 {statistics.median(speeds['int8']):.1f} tok/s, "
          f"int4 {statistics.median(speeds['int4']):.1f} tok/s; median of round ratios {statistics.median(ratios):.2f}x")
    prod = {"int8": [], "int4": []}
    for r in range(args.rounds):
        for mode in (("int8", "int4") if r % 2 == 0 else ("int4", "int8")):
            prod[mode].append(product_ms(engines[mode], 3))
    p8, p4 = statistics.median(prod["int8"]), statistics.median(prod["int4"])
    print(f"a step's matrix products: int8 {p8:.1f} ms, int4 {p4:.1f} ms ({p8 / p4:.2f}x)")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
