"""Constrained-decoding libraries compared on the Qwen2 vocabulary (issue 17): llguidance,
xgrammar and outlines-core.

Every library walks the same token sequence (a JSON document valid against the schema below,
tokenized by the real tokenizer) and computes the allowed-token mask before each token into a
preallocated buffer, as the engine does. Rounds interleave the libraries, so a busy machine
slows them alike and the ratios hold; the figures are medians per token.

    pip install llguidance xgrammar outlines-core transformers
    .venv/bin/python benchmarks/constrain_libs.py [TOKENIZER_DIR] [--rounds N]

TOKENIZER_DIR holds tokenizer.json (Qwen2: 151,646 tokens), default the imported real model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "score", "role", "tags", "address"],
}
DOCUMENT = {
    "name": "Ada Lovelace", "age": 36, "score": 97.5, "role": "admin",
    "tags": ["mathematics", "engines", "poetry of science"],
    "address": {"city": "London", "zip": "W1J 7NT"},
}


def _llguidance(tok_json: str, hf, schema: dict):
    import llguidance
    from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask

    t0 = time.perf_counter()
    tok = llguidance.LLTokenizer(tok_json, eos_token=hf.eos_token_id)
    t1 = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
    matcher = llguidance.LLMatcher(tok, grammar, log_level=0)
    t2 = time.perf_counter()
    assert not matcher.is_error(), matcher.get_error()
    mask = allocate_token_bitmask(1, tok.vocab_size)

    def walk(ids: list[int]) -> list[float]:
        matcher.reset()
        times = []
        for tid in ids:
            s = time.perf_counter()
            fill_next_token_bitmask(matcher, mask)
            times.append(time.perf_counter() - s)
            assert matcher.consume_token(tid), matcher.get_error()
        return times

    return t1 - t0, t2 - t1, walk


def _xgrammar(tok_json: str, hf, schema: dict):
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(hf)
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    t1 = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(schema))
    t2 = time.perf_counter()
    mask = xgr.allocate_token_bitmask(1, info.vocab_size)

    def walk(ids: list[int]) -> list[float]:
        matcher = xgr.GrammarMatcher(compiled)
        times = []
        for tid in ids:
            s = time.perf_counter()
            matcher.fill_next_token_bitmask(mask)
            times.append(time.perf_counter() - s)
            assert matcher.accept_token(tid)
        return times

    return t1 - t0, t2 - t1, walk


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's table: printable bytes stand for themselves, the rest map past U+0100
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _byte_vocab(hf) -> dict[bytes, list[int]]:
    # outlines-core takes raw token bytes; a byte-level BPE stores them as printable stand-ins
    decode = {c: b for b, c in _bytes_to_unicode().items()}
    vocab: dict[bytes, list[int]] = {}
    special = set(hf.all_special_ids)
    for token, tid in hf.get_vocab().items():
        if tid in special:
            continue
        raw = bytes(decode[c] for c in token) if all(c in decode for c in token) else token.encode()
        vocab.setdefault(raw, []).append(tid)
    return vocab


def _outlines(tok_json: str, hf, schema: dict):
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    t0 = time.perf_counter()
    vocab = Vocabulary(hf.eos_token_id, _byte_vocab(hf))
    t1 = time.perf_counter()
    index = Index(build_regex_from_schema(json.dumps(schema)), vocab)
    t2 = time.perf_counter()
    mask = torch.zeros((len(hf) + 31) // 32, dtype=torch.int32)

    def walk(ids: list[int]) -> list[float]:
        guide = Guide(index)
        times = []
        for tid in ids:
            s = time.perf_counter()
            guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
            times.append(time.perf_counter() - s)
            guide.advance(tid)
        return times

    return t1 - t0, t2 - t1, walk


LIBRARIES = {"llguidance": _llguidance, "xgrammar": _xgrammar, "outlines-core": _outlines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenizer_dir", nargs="?", default="/tmp/qchome/data/models/coder")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from transformers import PreTrainedTokenizerFast

    path = Path(args.tokenizer_dir) / "tokenizer.json"
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|im_end|>")
    ids = hf.encode(json.dumps(DOCUMENT, separators=(",", ":")), add_special_tokens=False)
    print(f"vocabulary {len(hf):,} tokens; document {len(ids)} tokens; torch threads {torch.get_num_threads()}")
    walks, per_token = {}, {}
    for name, make in LIBRARIES.items():
        setup_s, compile_s, walk = make(path.read_text(), hf, SCHEMA)
        walks[name], per_token[name] = walk, []
        print(f"{name:14} tokenizer setup {setup_s * 1e3:8.1f} ms   schema compile {compile_s * 1e3:8.1f} ms")
    for _ in range(args.rounds):  # interleaved, so load on the machine hits every library alike
        for name, walk in walks.items():
            per_token[name].extend(walk(ids))
    base = statistics.median(per_token["llguidance"])
    for name, times in per_token.items():
        med = statistics.median(times)
        p90 = sorted(times)[int(len(times) * 0.9)]
        mean = statistics.fmean(times)
        print(f"{name:14} mask per token: median {med * 1e6:8.1f} us   mean {mean * 1e6:8.1f} us   p90 {p90 * 1e6:8.1f} us   "
              f"max {max(times) * 1e6:9.1f} us   ({med / base:.2f}x llguidance)")


if __name__ == "__main__":
    main()
