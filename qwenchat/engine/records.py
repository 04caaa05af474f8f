"""The plain records the engine hands out and takes in: text chunks, the final reply with its
usage and timings, and per-request generation options.

They import nothing but the standard library, so the session, the UI and test doubles can use
the real types without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
