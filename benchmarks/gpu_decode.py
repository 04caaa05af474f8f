"""Decode on a CUDA GPU, the figures behind BENCHMARKS.md's eleventh session, in one run:

    python benchmarks/gpu_decode.py [--model DIR]    # default: random weights, Qwen2.5-0.5B shapes

1. SDPA's first call at new lengths (one query, GQA heads, bfloat16) with torch's default
   backends and with cuDNN left out, as our model's calls do (attention.ATTENTION_BACKENDS):
   cuDNN plans every new shape anew.
2. Our engine's decode tok/s with recorded CUDA graphs (cuda_graph.py) and with eager steps,
   interleaved, at a short and a ~27K-token context, greedy and sampled (Qwen2.5's settings).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def first_calls(start: int, n: int = 12) -> str:
    """ms of SDPA's first call at each of n new key lengths."""
    out = []
    for length in range(start, start + n):
        q = torch.randn(1, 14, 1, 64, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 2, length, 64, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        t = time.perf_counter()
        torch.nn.functional.scaled_dot_product_attention(q, k, k, enable_gqa=True)
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t) * 1e3)
    return f"{min(out):.2f}-{max(out):.2f} ms (mean {sum(out) / n:.2f})"


def decode_speeds(model_dir: Path) -> None:
    from qwenchat.engine.chat import ChatEngine, GenerateOptions

    engine = ChatEngine.load(model_dir, device="cuda")
    engine.defaults = replace(engine.defaults, eos_ids=frozenset())
    graphs, turn = engine.model.graphs, [0]

    def chat(words: int, sampled: bool) -> str:
        turn[0] += 1  # a new prompt each time: new lengths, as in real use
        messages = [{"role": "user", "content": f"Story {turn[0]}: " + "about the sea " * words}]
        engine.reset_cache()
        options = GenerateOptions(max_new_tokens=128, temperature=0.7 if sampled else 0.0, top_k=20, top_p=0.8,
                                  repetition_penalty=1.05)
        reply = list(engine.chat(messages, options))[-1]
        return f"{reply.timings.decode_tok_s:6.1f} tok/s (prompt {reply.usage.prompt_tokens})"

    chat(5, False)
    for words in (5, 3000):
        for recorded in (False, True, False, True):
            engine.model.graphs = graphs if recorded else None
            print(f"{'graphs' if recorded else 'eager ':6} greedy {chat(words, False)}; sampled {chat(words, True)}")
    engine.model.graphs = graphs
    print("recorded spans:", sorted(graphs._recorded) if graphs else None, "failure:", graphs and graphs.failure)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="an HF-format model folder (default: random weights, real shapes)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_decode.py needs a CUDA GPU: torch sees none here")
    print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    b = torch.backends.cuda
    print("SDPA first call at new lengths, default backends:", first_calls(100))
    b.enable_cudnn_sdp(False)
    print("SDPA first call at new lengths, cuDNN left out:  ", first_calls(500))
    b.enable_cudnn_sdp(True)
    with tempfile.TemporaryDirectory() as tmp:
        from benchmarks.gpu_speed import random_model

        decode_speeds(args.model or random_model(Path(tmp) / "model"))


if __name__ == "__main__":
    main()
