"""The choices behind a prompt on the CPU's matrix units (AMX), measured on this CPU:

1. a prompt's attention (causal SDPA, the 0.5B model's heads) in float32 against bfloat16
   (`Attention.prompt_dtype`);
2. with `--model DIR`: an int4 engine's prefill at 20-256 tokens with the matrix units on and off
   (`quantize_int4.INT4_AMX_ROWS`: int4 converts every weight to bfloat16 for them).

    taskset -c 0,1 .venv/bin/python benchmarks/amx_prompts.py [--model DIR] [--cache DIR]

From how many rows the int8 tiles beat our AVX2 kernel (`quantize.AMX_NATIVE_ROWS`) is
`prefill_products.py --rows 1,2,4,16`'s to say. Best of --reps runs, ms. bfloat16 attention is
slower than float32 on CPUs without bfloat16 units."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qwenchat.engine import int8_kernel
from qwenchat.engine.device import AMX_PROMPTS_ENV


def best_ms(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def attention(reps: int) -> None:
    print("causal attention, 14 query / 2 key-value heads of 64 (ms)")
    print("| tokens | float32 | bfloat16 | float32 / bfloat16 |\n|---|---|---|---|")
    for T in (512, 1708, 3417):
        q, k, v = torch.randn(1, 14, T, 64), torch.randn(1, 2, T, 64), torch.randn(1, 2, T, 64)
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
        f32 = best_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), reps)
        b16 = best_ms(lambda: F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True), reps)
        print(f"| {T} | {f32:.2f} | {b16:.2f} | {f32 / b16:.2f}x |")


def int4_prefill(model: Path, cache: Path | None, reps: int) -> None:
    from qwenchat.engine.chat import ChatEngine
    from qwenchat.engine.generate import prefill

    print("\nint4 engine, a prompt's prefill (ms), the matrix units on (1) and off (0)")
    print("| tokens | on | off |\n|---|---|---|")
    times: dict[str, dict[int, float]] = {}
    lengths = (20, 42, 117, 256)
    for value in ("1", "0"):
        os.environ[AMX_PROMPTS_ENV] = value  # read when the engine loads
        engine = ChatEngine.load(model, device="cpu", quantize="int4", int8_cache_dir=cache)
        ids = list(range(1000, 1000 + max(lengths)))

        def run(n: int) -> None:
            engine.reset_cache()
            with torch.inference_mode():
                prefill(engine.model, engine.cache, ids[:n])

        times[value] = {n: best_ms(lambda n=n: run(n), reps) for n in lengths}
    for n in lengths:
        print(f"| {n} | {times['1'][n]:.0f} | {times['0'][n]:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model folder: also time int4 prompts")
    parser.add_argument("--cache", type=Path, help="the int8/int4 weight cache folder for --model")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    kernel = int8_kernel.load(None).kernel
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; AMX tiles: {bool(kernel and kernel.amx)}")
    attention(args.reps)
    if args.model is not None:
        int4_prefill(args.model, args.cache, args.reps)


if __name__ == "__main__":
    main()
