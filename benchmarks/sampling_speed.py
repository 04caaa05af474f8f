"""What sampling costs a token on the CPU, with the CPU's narrowing (`Sampler.narrow`: top-k/top-p
on their best candidates) against the full vocabulary's sort and draw, in one run:

    taskset -c 0,1 .venv/bin/python benchmarks/sampling_speed.py            # the sampler alone
    taskset -c 0,1 .venv/bin/python benchmarks/sampling_speed.py --model DIR
                                                # also decode tok/s of a real model, interleaved

The sampler alone: ms a token over Qwen2's 151,936 scores. With --model: 100 tokens of one
prompt, forced past end-of-sequence, three rounds of greedy / full / narrowed, median tok/s.
Qwen2.5's Hub models ship temperature 0.7, top-k 20, top-p 0.8, repetition penalty 1.05."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import header, machine  # noqa: E402
from qwenchat.engine.sampling import Sampler, SamplingParams  # noqa: E402

SETTINGS = {
    "qwen2.5 defaults": SamplingParams(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05),
    "top-p only": SamplingParams(temperature=0.7, top_p=0.8, repetition_penalty=1.05),
    "temperature only": SamplingParams(temperature=0.7),
}


def sampler_ms(params: SamplingParams, narrow: bool, reps: int = 50) -> float:
    sampler = Sampler(params, 151936)
    if not narrow:
        sampler.narrow = lambda penalized: None
    sampler.reset(range(300))
    logits = torch.randn(151936, generator=torch.Generator().manual_seed(0)) * 3
    sampler(logits)
    start = time.perf_counter()
    for _ in range(reps):
        sampler(logits)
    return (time.perf_counter() - start) / reps * 1e3


def decode_speeds(model: Path) -> dict[str, float]:
    from qwenchat.engine.chat import ChatEngine, GenerateOptions

    engine = ChatEngine.load(model, device="cpu")
    engine.defaults = replace(engine.defaults, eos_ids=frozenset())
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    qwen = SETTINGS["qwen2.5 defaults"]
    sampled = GenerateOptions(max_new_tokens=100, seed=1, temperature=qwen.temperature, top_k=qwen.top_k,
                              top_p=qwen.top_p, repetition_penalty=qwen.repetition_penalty)
    runs = {"greedy": GenerateOptions(max_new_tokens=100, temperature=0.0), "sampled, full": sampled,
            "sampled, narrowed": sampled}
    narrow = Sampler.narrow
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(3):
        for name, options in runs.items():
            Sampler.narrow = narrow if name != "sampled, full" else lambda self, penalized: None
            engine.reset_cache()
            speeds[name].append(list(engine.chat(messages, options))[-1].timings.decode_tok_s)
    Sampler.narrow = narrow
    return {name: statistics.median(v) for name, v in speeds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="a model folder: also measure decode speed")
    args = p.parse_args()
    print(header(machine()), f"; torch threads {torch.get_num_threads()}")
    print(f"{'sampler, ms a token':24} {'full':>8} {'narrowed':>9} {'ratio':>6}")
    for name, params in SETTINGS.items():
        full, narrowed = sampler_ms(params, False), sampler_ms(params, True)
        print(f"{name:24} {full:8.2f} {narrowed:9.2f} {full / narrowed:5.1f}x")
    if args.model:
        speeds = decode_speeds(args.model)
        print("decode, tok/s (median of 3): " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items()))
        print(f"narrowed / full: {speeds['sampled, narrowed'] / speeds['sampled, full']:.2f}x;"
              f" narrowed / greedy: {speeds['sampled, narrowed'] / speeds['greedy']:.2f}x")


if __name__ == "__main__":
    main()
