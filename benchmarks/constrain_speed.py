"""Decode speed with a JSON schema against without (issue 17: target at least 0.8x).

Same prompt, greedy, the same number of new tokens: the constrained reply is generated first and
the free one is held to its length, so both decode the same count. Runs alternate, so load on a
shared machine hits both alike; the figures are medians of decode tok/s.

    .venv/bin/python benchmarks/constrain_speed.py [MODEL_DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.records import GenerateOptions, Reply

SCHEMA = {
    "type": "object",
    "properties": {
        "languages": {
            "type": "array", "minItems": 3, "maxItems": 3,
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "year": {"type": "integer"},
                                                       "paradigm": {"enum": ["functional", "imperative", "object-oriented", "logic"]}},
                      "required": ["name", "year", "paradigm"]},
        },
    },
    "required": ["languages"],
}
PROMPT = [{"role": "user", "content": "List three programming languages with the year each appeared and its main "
                                      "paradigm, as JSON."}]


def _reply(engine: ChatEngine, options: GenerateOptions) -> Reply:
    *_, reply = engine.chat(PROMPT, options)
    assert isinstance(reply, Reply)
    return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", default="/tmp/qchome/data/models/coder")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    engine = ChatEngine.load(Path(args.model_dir))
    _reply(engine, GenerateOptions(temperature=0, max_new_tokens=8, constraint=SCHEMA))  # builds the vocabulary view
    with_schema, free = [], []
    for _ in range(args.runs):
        engine.reset_cache()  # both prefill the prompt the same way
        c = _reply(engine, GenerateOptions(temperature=0, max_new_tokens=600, constraint=SCHEMA))
        engine.reset_cache()
        f = _reply(engine, GenerateOptions(temperature=0, max_new_tokens=c.usage.completion_tokens, stop=()))
        with_schema.append(c.timings.decode_tok_s)
        free.append(f.timings.decode_tok_s)
        print(f"schema: {c.usage.completion_tokens} tokens at {c.timings.decode_tok_s:.1f} tok/s ({c.finish_reason}); "
              f"free: {f.usage.completion_tokens} tokens at {f.timings.decode_tok_s:.1f} tok/s")
    ws, fr = statistics.median(with_schema), statistics.median(free)
    print(f"{engine.info.name} on {engine.info.device}, {engine.info.dtype}, {engine.info.quantize}: decode "
          f"{ws:.1f} tok/s with the schema, {fr:.1f} without: {ws / fr:.2f}x")


if __name__ == "__main__":
    main()
