"""Decode speed of `--quantize int4` against int8 on this machine, A/B interleaved in one process
(a shared machine's load moves both alike): each round decodes the same forced tokens with the
int8 engine, then the int4 one (the order alternates every round), and the ratio of each round
is printed, with the medians. Also the matrix products alone on the real shapes.

    .venv/bin/python benchmarks/int4_speed.py [--model DIR] [--rounds 7] [--tokens 64] [--variants int4-head8,int4-qkv4]

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


# --variants: int4 mode with one of its choices undone (model.py's settings), to weigh each one
VARIANTS = {
    "int4-head8": ("INT4_OUTPUT", "int8"),  # the output projection int8 alone, no int4 copy
    "int4-qkv4": ("INT4_QKV", "int4"),  # the attention's q/k/v int4 like the other matrices
}


def _load(name: str, args: argparse.Namespace) -> ChatEngine:
    from qwenchat.engine import model_build

    setting = VARIANTS.get(name)
    saved = getattr(model_build, setting[0]) if setting else None
    if setting:
        setattr(model_build, setting[0], setting[1])
    try:
        t0 = time.perf_counter()
        engine = ChatEngine.load(args.model, device="cpu", quantize=name[:4], max_context=2048,
                                 kernel_dir=Path("/tmp/qwenchat-int4-bench-kernels"),
                                 int8_cache_dir=args.cache / name if setting else args.cache)  # fmt: skip
        print(f"{name}: loaded in {time.perf_counter() - t0:.1f} s; {engine.info.placement_reason.replace(chr(10), '; ')}", flush=True)
        return engine
    finally:
        if setting:
            setattr(model_build, setting[0], saved)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--cache", type=Path, default=MODEL.parent / "weight-caches")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--variants", default="", help=f"also decode with: {', '.join(VARIANTS)} (comma-separated)")
    args = ap.parse_args()
    names = ["int8", "int4", *(v.strip() for v in args.variants.split(",") if v.strip())]
    unknown = [n for n in names[2:] if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    engines = {name: _load(name, args) for name in names}
    ids = engines["int8"].tokenizer.encode_plain(PROMPT)
    forced = [int(t) for t in torch.randint(100, 20000, (args.tokens,), generator=torch.Generator().manual_seed(0))]
    print(f"cpu: {_cpu()}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:  # the order alternates every round
            speeds[name].append(decode_tok_s(engines[name], ids, forced))
        line = ", ".join(f"{n} {speeds[n][-1]:.1f} tok/s" for n in names)
        print(f"round {r + 1}: {line}, int4/int8 {speeds['int4'][-1] / speeds['int8'][-1]:.2f}x "
              f"(load average {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(speeds[name], speeds["int8"]))
        print(f"decode median {name}: {statistics.median(speeds[name]):.1f} tok/s; median of round ratios to int8 {ratio:.2f}x")
    prod = {"int8": [], "int4": []}
    for r in range(args.rounds):
        for mode in (("int8", "int4") if r % 2 == 0 else ("int4", "int8")):
            prod[mode].append(product_ms(engines[mode], 3))
    p8, p4 = statistics.median(prod["int8"]), statistics.median(prod["int4"])
    print(f"a step's matrix products (each called from Python): int8 {p8:.1f} ms, int4 {p4:.1f} ms ({p8 / p4:.2f}x)")


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
