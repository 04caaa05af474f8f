"""Decode speed with the quantized weights in 2 MB pages (engine/hugepages.py) against ordinary
4 KB pages, on this machine.

    .venv/bin/python benchmarks/huge_pages.py [--model DIR] [--quantize int8] [--rounds 3] [--tokens 100]

Each run is its own process (an engine loaded alone, as `ask` and the app load it), from the
weight cache beside the test model: "2 MB" as the engine does it, "4 KB" with the huge-page
advice switched off in that process (`hugepages.OFFERED = False`). The runs alternate, so a
shared machine's drift hits both; each prints its decode tok/s (forced tokens after a short
prompt, two threads unless QWENCHAT_THREADS says otherwise), its load time and how much of the
process's memory the kernel holds in huge pages (AnonHugePages); the medians and their ratio
end the run. Where the kernel offers no huge pages both rows read the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = Path.home() / ".cache" / "qwenchat-tests" / "imported-fp32"
KERNELS = Path("/tmp/qwenchat-huge-pages-bench-kernels")


def child(args: argparse.Namespace) -> None:
    """One run: load, decode, print one JSON line."""
    import torch

    from qwenchat.engine import hugepages

    hugepages.OFFERED = args.child == "2 MB"
    from qwenchat.engine.chat import ChatEngine

    t0 = time.perf_counter()
    engine = ChatEngine.load(args.model, device="cpu", quantize=args.quantize, max_context=2048, kernel_dir=KERNELS,
                             int8_cache_dir=args.model.parent / "weight-caches")  # fmt: skip
    load_s = time.perf_counter() - t0
    model, cache = engine.model, engine.cache
    ids = engine.encode_chat([{"role": "user", "content": "Write a haiku about autumn leaves."}])
    model(torch.tensor([ids]), cache, 0)
    t0 = time.perf_counter()
    for i in range(args.tokens):
        model(torch.tensor([[1000 + i]]), cache, len(ids) + i)
    tok_s = args.tokens / (time.perf_counter() - t0)
    huge_kb = 0
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines() if Path("/proc/self/smaps_rollup").exists() else ():
        if line.startswith("AnonHugePages:"):
            huge_kb = int(line.split()[1])
    print(json.dumps({"tok_s": tok_s, "load_s": load_s, "huge_mb": huge_kb / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--quantize", default="int8", choices=("int8", "int4"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--child", choices=("2 MB", "4 KB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    env = {**os.environ, "QWENCHAT_THREADS": os.environ.get("QWENCHAT_THREADS", "2")}
    runs: dict[str, list[dict]] = {"2 MB": [], "4 KB": []}
    for r in range(args.rounds):
        for pages in ("2 MB", "4 KB") if r % 2 == 0 else ("4 KB", "2 MB"):
            cmd = [sys.executable, __file__, "--model", str(args.model), "--quantize", args.quantize,
                   "--tokens", str(args.tokens), "--child", pages]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
            runs[pages].append(json.loads(out.strip().splitlines()[-1]))
            got = runs[pages][-1]
            print(f"round {r + 1}, {pages} pages: {got['tok_s']:.1f} tok/s, load {got['load_s']:.2f} s, "
                  f"{got['huge_mb']:.0f} MB in huge pages", flush=True)
    med = {p: {k: statistics.median(x[k] for x in v) for k in ("tok_s", "load_s", "huge_mb")} for p, v in runs.items()}
    print(f"\n{args.quantize}, {args.rounds} alternating runs each, {args.tokens} forced tokens\n")
    print("| pages | decode tok/s | load s | MB in huge pages |\n|---|---|---|---|")
    for p, m in med.items():
        print(f"| {p} | {m['tok_s']:.1f} | {m['load_s']:.2f} | {m['huge_mb']:.0f} |")
    print(f"\n2 MB / 4 KB decode: {med['2 MB']['tok_s'] / med['4 KB']['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
