"""Decode speed with a long conversation in the KV cache against a short one (issue 15, item 5:
at least 0.8x at ~3.4K cached tokens).

    .venv/bin/python benchmarks/long_context.py [--rounds 3] [--tokens 64] [--quantize int8] [--json]

One process, one engine (the CPU defaults unless `--quantize`), the real test model. The short
context is `qwenchat.bench`'s ~40-token chat prompt, the long one its ten-turn conversation
(~3,400 tokens); each run decodes `--tokens` forced greedy tokens after its prompt, and only the
decode rate is compared (the prompt's prefill is not counted; the engine's cache pool keeps
the long conversation's keys and values between its runs). Short and long runs alternate so a
shared machine's drift hits both; the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BOUND = 0.8  # long-context decode / short-context decode


class Decoder:
    """Forced greedy decodes on one loaded engine (end-of-sequence switched off, as qwenchat
    bench does, so every run decodes the same number of tokens)."""

    def __init__(self, model_dir: Path, quantize: str | None = None) -> None:
        from qwenchat.engine.chat import ChatEngine, GenerateOptions
        from qwenchat.paths import int8_cache_dir, kernels_dir

        kwargs: dict[str, Any] = {"device": "cpu", "kernel_dir": kernels_dir(), "int8_cache_dir": int8_cache_dir()}
        if quantize:
            kwargs["quantize"] = quantize
        self.engine = ChatEngine.load(model_dir, **kwargs)
        self.options = GenerateOptions(temperature=0.0, repetition_penalty=1.0)

    def decode(self, messages: list[dict[str, str]], tokens: int) -> dict[str, float]:
        saved = self.engine.defaults
        self.engine.defaults = replace(saved, eos_ids=frozenset())
        try:
            reply = list(self.engine.chat(messages, replace(self.options, max_new_tokens=tokens)))[-1]
        finally:
            self.engine.defaults = saved
        return {"decode_tok_s": reply.timings.decode_tok_s, "context": reply.usage.prompt_tokens,
                "tokens": reply.usage.completion_tokens}


def measure(decoder: Decoder, rounds: int, tokens: int, log=None) -> dict[str, Any]:
    from qwenchat.bench import conversation, short_chat

    log = log or (lambda _text: None)
    prompts = {"short": short_chat(), "long": conversation()}
    load_before = os.getloadavg()[0]
    log("long conversation: first prefill (not timed)")
    decoder.decode(prompts["long"], 2)
    runs: dict[str, list[dict[str, float]]] = {"short": [], "long": []}
    for r in range(rounds):
        for name in ("short", "long") if r % 2 == 0 else ("long", "short"):
            runs[name].append(decoder.decode(prompts[name], tokens))
            log(f"  round {r + 1}: {name} context ({runs[name][-1]['context']} tokens) "
                f"{runs[name][-1]['decode_tok_s']:.1f} tok/s")
    return summarize(runs, load_before, os.getloadavg()[0])


def summarize(runs: dict[str, list[dict[str, float]]], load_before: float, load_after: float) -> dict[str, Any]:
    short = statistics.median(r["decode_tok_s"] for r in runs["short"])
    long = statistics.median(r["decode_tok_s"] for r in runs["long"])
    ratio = long / short if short else None
    return {"short_tok_s": short, "long_tok_s": long, "ratio": ratio,
            "short_context": runs["short"][0]["context"], "long_context": runs["long"][0]["context"],
            "tokens": runs["short"][0]["tokens"], "runs": runs, "load_before": load_before,
            "load_after": load_after,
            "targets": [{"text": f"decode at ~3.4K cached tokens >= {BOUND}x a short context", "measured": ratio,
                         "bound": BOUND,
                         "verdict": "n/a" if ratio is None else "met" if ratio >= BOUND else "not met"}]}


def report(result: dict[str, Any]) -> str:
    return "\n".join([
        f"long context against short: {len(result['runs']['short'])} alternating runs each of {result['tokens']} "
        f"forced tokens; load average {result['load_before']:.2f} before, {result['load_after']:.2f} after", "",
        f"| decode (tok/s, median) | short ({result['short_context']} tokens) | long ({result['long_context']} "
        "tokens) | long/short |", "|---|---|---|---|",
        f"| forced greedy tokens | {result['short_tok_s']:.1f} | {result['long_tok_s']:.1f} | {result['ratio']:.2f}x |",
    ])


def main(argv: list[str] | None = None) -> int:
    from benchmarks.app_speed import model_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64, help="forced greedy tokens per run")
    p.add_argument("--quantize", default=None, help="int8, int4 or none (default: the engine's CPU default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = measure(Decoder(model_dir(), args.quantize), args.rounds, args.tokens,
                     log=lambda t: print(t, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
