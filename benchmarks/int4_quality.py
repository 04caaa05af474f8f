"""Which int4 format keeps the real model closest to float32: perplexity on the quality guard's
text and greedy replies on its five prompts, with each variant's weights quantized and then
dequantized into a float32 model (the function the int4 kernel computes, up to sum order).

    .venv/bin/python benchmarks/int4_quality.py [--variants a,b] [--no-greedy]

Variants: affine (scale + min) or symmetric (Q4_0-like) groups of 32 or 64 columns, with or
without the range search, the embedding / output projection (tied) int4 or int8; and
engine-int4 / engine-int4-emb8: the real `--quantize int4` engine (kernel and fused decode), with
the embedding and output projection int4, or as the engine has them (embedding int8, output
projection int4 with its largest logits from the int8 rows: int4_head.py).

Each variant's line says where each reply parted from float32's and by how much float32's first
choice led its second there: a reply that parts where float32's own lead is a hundredth of a
logit says little about the format (after the fp32 line: each reply's smallest lead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwenchat.engine import model_build  # noqa: E402
from qwenchat.engine import quantize_int4 as q4  # noqa: E402
from qwenchat.engine.int4_head import KIND as HEAD_KIND  # noqa: E402
from qwenchat.engine.chat import ChatEngine  # noqa: E402
from qwenchat.engine.quantize import quantize_int8  # noqa: E402
from tests.real.test_quality_guard import N_TOKENS, PROMPTS, TEXT, greedy_replies, messages, perplexity  # noqa: E402

MODEL = Path.home() / ".cache" / "qwenchat-tests" / "imported-fp32"


def symmetric(w: torch.Tensor, group: int) -> torch.Tensor:
    """Q4_0: d = the group's signed extreme / -8, q = round(w / d) + 8 in 0..15."""
    n, k = w.shape
    g = w.view(n, k // group, group)
    idx = g.abs().argmax(-1, keepdim=True)
    d = (g.gather(-1, idx) / -8).to(torch.bfloat16).float()
    d = torch.where(d == 0, torch.ones_like(d), d)
    q = (g / d).round().add(8).clamp(0, 15)
    return ((q - 8) * d).view(n, k)


def fake(w: torch.Tensor, kind: str, group: int, search: bool) -> torch.Tensor:
    if kind == "int8":
        return quantize_int8(w).dequantize()
    if kind == "sym":
        return symmetric(w, group)
    saved = q4.RANGE_SEARCH
    q4.RANGE_SEARCH = saved if search else (1.0,)
    try:
        return q4.quantize_int4(w, group=group).dequantize()
    finally:
        q4.RANGE_SEARCH = saved


VARIANTS = {  # name: (layers' kind, group, range search, embedding kind)
    "affine32": ("affine", 32, True, "affine"),
    "affine32-emb8": ("affine", 32, True, "int8"),
    "affine32-nosearch": ("affine", 32, False, "affine"),
    "affine64": ("affine", 64, True, "affine"),
    "sym32": ("sym", 32, False, "sym"),
    "int8": ("int8", 0, False, "int8"),
}


def apply(engine: ChatEngine, variant: str) -> None:
    kind, group, search, emb = VARIANTS[variant]
    model = engine.model
    for layer in model.model.layers:
        for lin in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
            lin.weight.data.copy_(fake(lin.weight.data, kind, group, search))
    e = model.model.embed_tokens.weight
    e.data.copy_(fake(e.data, emb, group or 32, search))
    if model.lm_head.weight.data_ptr() != e.data_ptr():
        model.lm_head.weight.data.copy_(fake(model.lm_head.weight.data, emb, group or 32, search))


def margins(engine: ChatEngine, replies: list[list[int]]) -> list[list[float]]:
    """float32's lead of its first choice over its second at each token of its own greedy
    replies: where that lead is a hundredth of a logit, any lossy format's reply is a coin toss."""
    out = []
    for prompt, reply in zip(PROMPTS, replies):
        ids, reply = engine.encode_chat(messages(prompt)), reply[:N_TOKENS]
        engine.cache.reset()
        with torch.inference_mode():
            logits = engine.model.logits(engine.model.hidden(torch.tensor([ids + reply]), engine.cache, 0))[0]
        engine.cache.reset()
        top = logits[len(ids) - 1 : len(ids) - 1 + len(reply)].topk(2, dim=-1).values
        out.append((top[:, 0] - top[:, 1]).tolist())
    return out


def parted(ref: list[list[int]], got: list[list[int]], lead: list[list[float]]) -> str:
    """Where each reply parted from float32's, with float32's lead there ("=" where it did not)."""
    marks = []
    for a, b, m in zip(ref, got, lead):
        i = next((i for i, (x, y) in enumerate(zip(a[:N_TOKENS], b[:N_TOKENS])) if x != y), None)
        marks.append("=" if i is None else f"@{i} (lead {m[i]:.2f})")
    return ", ".join(marks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-greedy", action="store_true")
    args = ap.parse_args()
    base = ChatEngine.load(MODEL, device="cpu", max_context=4096, quantize="none")
    ref_ppl = perplexity(base, TEXT)
    ref = None if args.no_greedy else greedy_replies(base)
    print(f"fp32: perplexity {ref_ppl:.4f}", flush=True)
    if ref is not None:
        lead = margins(base, ref)
        print("fp32's smallest lead of its first choice over its second, per reply: "
              + ", ".join(f"{min(m):.2f} @{m.index(min(m))}" for m in lead), flush=True)
    del base
    for v in args.variants.split(","):
        t0 = time.perf_counter()
        if v.startswith("engine-"):  # the real int4 mode (kernel, fused decode), embedding as named
            model_build.INT4_EMBEDDING = "int8" if v.endswith("emb8") else "int4"
            model_build.INT4_OUTPUT = HEAD_KIND if v.endswith("emb8") else "int4"
            cache = MODEL.parent / "weight-caches" if model_build.INT4_EMBEDDING == "int4" else None
            engine = ChatEngine.load(MODEL, device="cpu", max_context=4096, quantize="int4", int8_cache_dir=cache)
        else:
            engine = ChatEngine.load(MODEL, device="cpu", max_context=4096, quantize="none")
            apply(engine, v)
        ppl = perplexity(engine, TEXT)
        line = f"{v}: perplexity {ppl:.4f} ({ppl / ref_ppl:.4f}x fp32)"
        if ref is not None:
            got = greedy_replies(engine)
            same = [a[:N_TOKENS] == b[:N_TOKENS] for a, b in zip(ref, got)]
            line += f", greedy equal on {sum(same)}/5; parted {parted(ref, got, lead)}"
        print(f"{line} [{time.perf_counter() - t0:.0f} s]", flush=True)
        del engine


if __name__ == "__main__":
    main()
