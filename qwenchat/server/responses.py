"""OpenAI's response objects: chat completions, text completions, their stream chunks and usage.
Plain dicts built from the engine's records; the route decides when to send which."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from qwenchat.engine.records import Reply


@dataclass(frozen=True)
class Stamp:
    """What every object of one response shares: its id, creation time and model name."""

    kind: str  # "chat" or "text"
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def new(cls, kind: str, model: str) -> "Stamp":
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return cls(kind, model, f"{prefix}-{uuid.uuid4().hex}")

    def head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def finish_reason(reply: Reply) -> str:
    return "length" if reply.finish_reason == "length" else "stop"


def usage(reply: Reply) -> dict[str, Any]:
    u = reply.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def completion(stamp: Stamp, reply: Reply) -> dict[str, Any]:
    if stamp.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": reply.text},
                  "finish_reason": finish_reason(reply), "logprobs": None}
        return stamp.head("chat.completion") | {"choices": [choice], "usage": usage(reply)}
    choice = {"index": 0, "text": reply.text, "finish_reason": finish_reason(reply), "logprobs": None}
    return stamp.head("text_completion") | {"choices": [choice], "usage": usage(reply)}


def chunk(stamp: Stamp, text: str | None, *, role: bool = False, reply: Reply | None = None,
          with_usage: bool = False) -> dict[str, Any]:
    """One stream chunk: the role (first), a piece of text, or the end (`reply` given)."""
    reason = finish_reason(reply) if reply is not None else None
    if stamp.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        obj = stamp.head("chat.completion.chunk") | {"choices": [choice]}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        obj = stamp.head("text_completion") | {"choices": [choice]}
    if with_usage:
        obj["usage"] = None  # OpenAI: null on every chunk but the last, which carries only usage
    return obj


def usage_chunk(stamp: Stamp, reply: Reply) -> dict[str, Any]:
    obj = "chat.completion.chunk" if stamp.kind == "chat" else "text_completion"
    return stamp.head(obj) | {"choices": [], "usage": usage(reply)}
