"""The plain records the engine hands out and takes in: text chunks, the final reply with its
usage and timings, per-request generation options and the range each option accepts.

They import nothing but the standard library, so the session, the UI and test doubles can use
the real types without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Chunk:
    """A piece of the reply's text, safe to show (never a broken character)."""

    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int  # reused from the KV cache
    prefilled_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Timings:
    ttft_s: float  # request start -> first token sampled (includes prefill)
    prefill_s: float
    decode_s: float
    prefill_tok_s: float
    decode_tok_s: float


@dataclass(frozen=True)
class Reply:
    """The end of a stream: the whole text and how generation went."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    token_ids: list[int] = field(default_factory=list)
    dropped_messages: int = 0  # older turns left out to fit the context window


@dataclass(frozen=True)
class GenerateOptions:
    """Per-request overrides of the model's generation defaults; None keeps the default."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Structured output: a JSON schema (a dict) or "json_object" (any JSON object); every reply
    # then parses as JSON and matches it, or is cut by the token limit (engine/constrain.py).
    constraint: dict[str, Any] | str | None = None


@dataclass(frozen=True)
class OptionRange:
    """The values one generation option accepts: `low` to `high`, both ends included unless
    `low_open`; whole numbers only when `integer`. NaN and infinities are never in range."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    meaning: str = ""  # what the special values do, for messages: " (0 = greedy)"

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        low, high = _number(self.low), _number(self.high)
        allowed = f"{kind} greater than {low} and at most {high}" if self.low_open else f"{kind} from {low} to {high}"
        return allowed + self.meaning


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


# The one declaration of the generation options' ranges. The engine validates with it
# (sampling.SamplingParams, generate.GenerationSettings) and qwenchat.config derives its
# checks from it (config, settings dialog, command line; this module is torch-free). Beyond these bounds
# no value changes the output any further (temperature 100 is already uniform noise, no
# vocabulary has a million tokens), so larger ones are typos or attacks.
OPTION_RANGES: dict[str, OptionRange] = {
    "temperature": OptionRange(0, 100, meaning=" (0 = greedy)"),
    "top_k": OptionRange(0, 1_000_000, integer=True, meaning=" (0 = off)"),
    "top_p": OptionRange(0, 1, low_open=True, meaning=" (1 = off)"),
    "min_p": OptionRange(0, 1, meaning=" (0 = off)"),
    "repetition_penalty": OptionRange(0.01, 100, meaning=" (1 = off)"),
    "max_new_tokens": OptionRange(1, 10_000_000, integer=True),
    # torch.Generator takes an unsigned 64-bit seed
    "seed": OptionRange(0, 2**64 - 1, integer=True, meaning=" or unset"),
}


# The output constraint that means any JSON object (no schema): GenerateOptions.constraint's one
# value that is not a schema (engine/schema_grammar.py builds its grammar).
JSON_OBJECT = "json_object"


# The smallest context window (tokens) the engine takes: a chat template's own markup for one short
# turn is about 10. engine/chat.py enforces it; qwenchat.config checks `context_limit` with it.
MIN_CONTEXT = 16


# The one declaration of the weight formats `quantize` accepts (engine/device.py's
# choose_quantize decides what each means; qwenchat.config and the command line derive their
# checks and completions from this, torch-free). "auto": the engine's choice for the device.
QUANTIZE_MODES: tuple[str, ...] = ("auto", "none", "int8", "int4")
