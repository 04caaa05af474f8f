"""Our engine against transformers on a CUDA GPU: the workloads of `qwenchat bench`, the same
token ids, the same weights, one process, one after the other.

    python benchmarks/gpu_speed.py                   # random weights shaped like Qwen2.5-0.5B-Instruct
    python benchmarks/gpu_speed.py --model DIR       # an HF-format model folder (a real one)
    python benchmarks/gpu_speed.py --dtype float32   # both engines in float32 (default bfloat16)
    python benchmarks/gpu_speed.py --device cpu --ours-dtype auto --dtype bfloat16
                                                     # on a CPU: ours at its defaults against transformers bf16

The GPU machines lent to this project cannot reach the Hub nor carry the 491 MB test GGUF, so
by default the model is built there: the real model's shapes (24 layers, hidden 896, 14:2 heads,
151,936-entry vocabulary, tied) with random weights and the tests' small tokenizer. Speed does
not depend on the weights' values; the token counts do (the small tokenizer splits text into
more tokens than Qwen's), so they are printed. Prints a table with ours/transformers ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import workers  # noqa: E402 - after the path set-up

ROWS = (  # (label, key, unit, higher is better)
    ("load", "load_s", "s", False),
    ("time to first token, short prompt", "ttft_s", "s", False),
    ("prefill, short prompt", "short_prefill_tok_s", "tok/s", True),
    ("decode, forced greedy tokens", "decode_tok_s", "tok/s", True),
    ("prefill, 10-turn conversation", "long_prefill_tok_s", "tok/s", True),
)


def random_model(out: Path) -> Path:
    """The real model's shapes with random weights (see the module docstring)."""
    from tests.fixtures.tiny import QWEN2_5_TEMPLATE, TinySpec, build_model

    spec = TinySpec("qwen25_05b_shape", 896, 14, 2, True, QWEN2_5_TEMPLATE, num_hidden_layers=24,
                    intermediate_size=4864, max_position_embeddings=32768, initializer_range=0.02, vocab_size=151936)
    return build_model(out, spec)


def prepare(model_dir: Path, device: str, quick: bool) -> dict[str, Any]:
    """The workloads' token ids, tokenized once by our tokenizer and template, for both engines."""
    from qwenchat import bench
    from qwenchat.engine.template import ChatTemplate
    from qwenchat.engine.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(model_dir)
    template = ChatTemplate.from_dir(model_dir, tok.special_tokens)

    def ids(messages: list[dict[str, str]]) -> list[int]:
        return tok.encode_chat(template.render(messages, add_generation_prompt=True), [m["content"] for m in messages])

    workload = bench.QUICK if quick else bench.FULL
    return {"model_dir": str(model_dir), "device": device, "quick": quick, "bf16_long": True,
            "decode_tokens": workload.decode_tokens, "pad_id": tok.eos_token_id,
            "short_ids": ids(bench.short_chat()), "long_ids": ids(bench.conversation(workload)),
            "followup_ids": ids(bench.followup_conversation(workload))}


def table(ours: dict[str, Any], hf: dict[str, Any]) -> list[str]:
    lines = [f"{'':38} {'ours':>10} {'transformers':>13} {'ours/tf':>8}"]
    for label, key, unit, higher in ROWS:
        a, b = ours.get(key), hf.get(key)
        if a is None or b is None:
            continue
        ratio = a / b if higher else b / a  # > 1: ours is better
        lines.append(f"{label:38} {a:>8.3g} {unit:<2}{b:>10.3g} {unit:<2} {ratio:>6.2f}x")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="an HF-format model folder (default: random weights, real shapes)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--ours-dtype", help="our engine's dtype if not --dtype's (auto: its own choice, int8 weights on a CPU)")
    p.add_argument("--quick", action="store_true", help="small workloads: a smoke run")
    p.add_argument("--json", action="store_true", help="also print both results as one JSON object")
    args = p.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or random_model(Path(tmp) / "model")
        spec = prepare(model_dir, args.device, args.quick)
        threads = torch.get_num_threads()
        ours = workers.worker_ours(spec, {"dtype": args.ours_dtype or args.dtype})
        torch.set_num_threads(threads)  # ours leaves its chosen count; transformers gets torch's default
        hf = workers.worker_hf(spec, args.dtype, args.device)
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"{gpu}, torch {torch.__version__}, ours {ours['dtype']} ({ours['quantize']} quantize), transformers {args.dtype}, model {'random weights, Qwen2.5-0.5B shapes' if args.model is None else args.model}")
    print(f"tokens: short prompt {len(spec['short_ids'])}, conversation {len(spec['long_ids'])}, decoded {spec['decode_tokens']}")
    print("\n".join(table(ours, hf)))
    if args.json:
        print(json.dumps({"ours": ours, "transformers": hf}))


if __name__ == "__main__":
    main()
