"""One streamed reply from a server -> the engine's records: `Chunk`s, then a `Reply` whose usage
is the server's (or an estimate when it reports none) and whose timings are measured here.

Each event must be an OpenAI chunk (a JSON object with a `choices` list); anything else is a
FormatError. A cancel (see feed.py) ends the reply "cancelled" with what came so far. A stream
that ends without a finish reason was cut off (StreamCutError).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from qwenchat.engine.records import Chunk, Reply, Timings, Usage
from qwenchat.remote.errors import StreamCutError
from qwenchat.remote.feed import Feed
from qwenchat.remote.failures import ServerSaid, not_openai, server_text


@dataclass
class Clock:
    started: float
    first: float | None = None
    last: float | None = None

    def tick(self) -> None:
        now = time.perf_counter()
        self.first = self.first if self.first is not None else now
        self.last = now

    def timings(self, prefilled: int, completion: int) -> Timings:
        end = self.last if self.last is not None else time.perf_counter()
        ttft = (self.first if self.first is not None else end) - self.started
        decode = end - self.first if self.first is not None else 0.0
        return Timings(ttft_s=ttft, prefill_s=ttft, decode_s=decode,
                       prefill_tok_s=prefilled / ttft if ttft > 0 else 0.0,
                       decode_tok_s=(completion - 1) / decode if decode > 0 and completion > 1 else 0.0)


def read(feed: Feed, server: str, chat: bool, clock: Clock,
         estimate: Callable[[str], tuple[int, int]]) -> Iterator[Chunk | Reply]:
    """Records from `feed` (the server's decoded JSON events). `estimate(text)` -> (prompt
    tokens, completion tokens) for a server that reports no usage."""
    parts: list[str] = []
    reason: str | None = None
    usage: dict[str, Any] | None = None
    n_chunks = 0
    try:
        if feed.open():
            _check_kind(feed.response, server)
            for event in feed:
                choices, event_usage = _shape(event, server)
                usage = event_usage or usage
                for choice in choices[:1]:
                    text = _text(choice, chat)
                    if text:
                        clock.tick()
                        parts.append(text)
                        n_chunks += 1
                        yield Chunk(text)
                    reason = choice.get("finish_reason") or reason
    finally:
        feed.close()
    said = "".join(parts)
    if feed.cancelled:
        reason = "cancelled"
    if reason is None:
        raise StreamCutError(f"the reply from {server} ended before it was complete (no finish reason)",
                             "the partial reply is kept; continue or regenerate it")
    finish = "cancelled" if reason == "cancelled" else ("length" if reason == "length" else "stop")
    counts = _usage(usage) or _estimated(estimate(said), n_chunks)
    return_usage = Usage(prompt_tokens=counts[0], cached_tokens=counts[1],
                         prefilled_tokens=max(0, counts[0] - counts[1]), completion_tokens=counts[2])
    yield Reply(said, finish, return_usage, clock.timings(return_usage.prefilled_tokens, counts[2]))


def _check_kind(response: Any, server: str) -> None:
    kind = response.headers.get("content-type", "") if response is not None else "text/event-stream"
    if "event-stream" not in kind:
        what = "an HTML page" if "html" in kind else (f"{kind.split(';')[0]} instead of a stream" if kind else "no content type")
        raise not_openai(server, what)


def _shape(event: Any, server: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if isinstance(event, dict) and (event.get("object") == "error" or event.get("error")):  # vLLM, OpenAI
        raise ServerSaid(server_text(event, "no details"))
    if not isinstance(event, dict) or not isinstance(event.get("choices"), list) \
            or not all(isinstance(c, dict) for c in event["choices"]):
        raise not_openai(server, "stream events without 'choices'")
    usage = event.get("usage")
    return event["choices"], usage if isinstance(usage, dict) else None


def _text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        delta = choice.get("delta")
        value = delta.get("content") if isinstance(delta, dict) else None
    else:
        value = choice.get("text")
    return value if isinstance(value, str) else ""


def _usage(usage: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """(prompt, cached, completion) from the server's usage, or None when it sent none."""
    if not usage:
        return None
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return prompt, min(cached, prompt), completion


def _estimated(counts: tuple[int, int], n_chunks: int) -> tuple[int, int, int]:
    prompt, completion = counts
    return prompt, 0, max(completion, n_chunks)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
