"""Generation options -> the request's API fields, and the fields a server refused.

temperature, top_p, max_tokens, seed and stop are OpenAI's own fields; top_k, min_p and
repetition_penalty are the extensions vLLM, llama.cpp and `qwenchat serve` accept; `constraint`
becomes `response_format`. A field the server refuses (a 400 naming it) is dropped from then on
and reported once (`Refusals`), never silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwenchat.api_fields import API_FIELDS, response_format
from qwenchat.engine.records import GenerateOptions

# fields we add ourselves, not settings: dropping them changes only what we learn
STREAM_OPTIONS = "stream_options"
# what a server's 400 says when it does not know a field at all (without naming it in `param`)
REFUSAL_WORDS = ("unsupported", "not supported", "unknown", "unrecognized", "not allowed", "not permitted",
                 "extra inputs", "extra fields", "invalid field")


def request_fields(options: GenerateOptions | None, refused: set[str], chat: bool) -> dict[str, Any]:
    """The optional fields of a request for `options`, less those the server refused."""
    o = options or GenerateOptions()
    body: dict[str, Any] = {api: getattr(o, name) for name, api in API_FIELDS.items() if getattr(o, name) is not None}
    if o.stop:
        body["stop"] = list(o.stop)
    if chat and o.constraint is not None:
        body["response_format"] = response_format(o.constraint)
    body[STREAM_OPTIONS] = {"include_usage": True}
    return {k: v for k, v in body.items() if k not in refused}


def refused_field(param: str | None, text: str, sent: dict[str, Any]) -> str | None:
    """The field of `sent` a 400 names (its `param`, else the first sent field its text
    mentions), or None when it names none of them."""
    if param:
        head = param.split(".")[0].split("[")[0]
        if head in sent:
            return head
    lowered = text.lower()
    if not any(w in lowered for w in REFUSAL_WORDS):  # e.g. "max_tokens is too large": a value, not the field
        return None
    for name in sorted(sent, key=len, reverse=True):
        if name in lowered:
            return name
    return None


@dataclass
class Refusals:
    """The fields this server refused (never sent again) and the notes not yet shown."""

    fields: set[str] = field(default_factory=set)
    pending: list[str] = field(default_factory=list)

    def add(self, name: str, said: str) -> None:
        self.fields.add(name)
        if name == STREAM_OPTIONS:
            note = "the server refused stream_options, so token counts are estimates"
        else:
            note = f"the server refused the setting {name!r}, so it is not sent (it said: {said})"
        self.pending.append(note)

    def take(self) -> list[str]:
        out, self.pending = self.pending, []
        return out
