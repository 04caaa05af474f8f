"""A prompt's matrix products for one Qwen2.5-0.5B layer (q/k/v, o, gate/up, down) on this CPU, ms
per layer, best of 5, for 117, 561 and 2,048 rows (or `--rows 16,42,96`): the int8 path of CPUs
without matrix units (our kernel up to NATIVE_ROWS rows, else dequantize to float32 and a float32
product), the int8 tiles AMX CPUs take (`Scratch(amx_prompts=True)`, device.amx_prompts; on other
CPUs the same numbers in plain C loops, slow), and references: float32 weights, bfloat16 weights
kept (transformers' bfloat16), int8 -> bfloat16 per product by hand (the tenth and eleventh
sessions' AMX path), torch's `_weight_int8pack_mm` and `_int_mm` (int8 activations). The figures
behind BENCHMARKS.md's tenth and twelfth sessions (taken on an AMX Xeon, 2 cores):

    taskset -c 0,1 env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prefill_products.py

Without AMX the `ours_amx` and bfloat16 rows are the slowest: the point is the ratio on a CPU that
has it."""
import argparse
import time

import torch
import torch.nn.functional as F
from qwenchat.engine import int8_kernel
from qwenchat.engine.quantize import Int8Linear, Scratch, quantize_int8

torch.manual_seed(0)
SHAPES = {"qkv": (1152, 896), "o": (896, 896), "gate_up": (9728, 896), "down": (896, 4864)}
print("threads", torch.get_num_threads(), "cap", torch.backends.cpu.get_cpu_capability())
native = int8_kernel.load(None).kernel
W = {k: torch.randn(n, kk) * 0.02 for k, (n, kk) in SHAPES.items()}
Q = {k: quantize_int8(w) for k, w in W.items()}
WB = {k: w.bfloat16() for k, w in W.items()}
scratch = Scratch(native)
# two weights per shape, used in turn, so each product dequantizes as a prompt's does once per layer
LIN = {k: [Int8Linear(Q[k], None, scratch, native=native, slot=0), Int8Linear(quantize_int8(W[k] * 1.0001), None, scratch, native=native, slot=0)] for k in SHAPES}
scratch_amx = Scratch(native, amx_prompts=True)
LIN_AMX = {k: [Int8Linear(Q[k], None, scratch_amx, native=native, slot=0), Int8Linear(quantize_int8(W[k] * 1.0001), None, scratch_amx, native=native, slot=0)] for k in SHAPES}


def timeit(fn, reps=5):
    fn(); best = 1e9
    for _ in range(reps):
        t = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t)
    return best * 1e3


def layer(T, how):
    xs = {k: torch.randn(T, kk) for k, (n, kk) in SHAPES.items()}
    xb = {k: x.bfloat16() for k, x in xs.items()}
    buf = {k: torch.empty(n, kk, dtype=torch.bfloat16) for k, (n, kk) in SHAPES.items()}
    # results into reused buffers, as the engine's prefill does (a fresh 80 MB result per product
    # page-faults: at 2,048 rows that is most of the gate/up product's time)
    out = {k: torch.empty(T, n) for k, (n, kk) in SHAPES.items()}
    outb = {k: torch.empty(T, n, dtype=torch.bfloat16) for k, (n, kk) in SHAPES.items()}
    flip = [0]

    def ours():  # today's path: dequantize to float32 (native kernel), float32 product
        flip[0] ^= 1
        for k in SHAPES: LIN[k][flip[0]](xs[k], out=out[k])

    def ours_amx():  # the AMX path: rows rounded to int8, int8 tiles, float32 scales
        flip[0] ^= 1
        for k in SHAPES: LIN_AMX[k][flip[0]](xs[k], out=out[k])

    def fp32():
        for k in SHAPES: torch.mm(xs[k], W[k].t(), out=out[k])

    def bf16():  # transformers bf16: bf16 weights resident
        for k in SHAPES: torch.mm(xb[k], WB[k].t(), out=outb[k])

    def deq_bf16():  # int8 -> bf16 per product, bf16 product, float32 out
        for k in SHAPES:
            w = buf[k].copy_(Q[k].q).mul_(Q[k].scale[:, None].bfloat16())
            F.linear(xs[k].bfloat16(), w).float()

    def int8pack():
        for k in SHAPES: torch._weight_int8pack_mm(xb[k], Q[k].q, Q[k].scale.bfloat16())

    def intmm():  # int8 x int8 -> int32 (dynamic per-row activation scales)
        for k in SHAPES:
            x = xs[k]; sx = x.abs().amax(1, keepdim=True) / 127
            xq = (x / sx).round_().to(torch.int8)
            (torch._int_mm(xq, Q[k].q.t()).float() * sx * Q[k].scale)

    return timeit({"ours": ours, "ours_amx": ours_amx, "fp32": fp32, "bf16": bf16, "deq_bf16": deq_bf16, "int8pack": int8pack, "intmm": intmm}[how])


print("cpu", torch.cpu.get_capabilities().get("cpu_name") if hasattr(torch.cpu, "get_capabilities") else "?")
parser = argparse.ArgumentParser()
parser.add_argument("--rows", default="117,561,2048", help="prompt lengths, comma-separated")
for T in (int(r) for r in parser.parse_args().rows.split(",")):
    row = []
    for how in ("ours", "ours_amx", "fp32", "bf16", "deq_bf16", "int8pack", "intmm"):
        try:
            row.append(f"{how} {layer(T, how):7.2f}")
        except Exception as ex:  # noqa: BLE001
            row.append(f"{how} ERR {type(ex).__name__}: {str(ex)[:60]}")
    print(f"T={T:5d} ms/layer: " + " | ".join(row))
