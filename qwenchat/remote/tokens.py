"""Token counts for a remote model: what the session needs to show context use and to check a
message's size before sending it.

vLLM (`POST /tokenize` with `prompt`, or with `messages` for the chat template) and llama.cpp's
server (`POST /tokenize` with `content`) count them, and `qwenchat serve` speaks vLLM's form; which
one a server speaks is found once, at connect. Elsewhere (Ollama, hosted APIs) the counts are estimates and `exact`
is False. Either way the lengths matter and the ids are placeholders. A count that fails later
(the server went away) falls back to the estimate: counting is for display, never a failure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from qwenchat.remote.reference import RemoteRef

CHARS_PER_TOKEN = 4  # byte-level BPE on English and code; other scripts count a token per character
PER_MESSAGE = 4  # the template's tokens around each message (<|im_start|>role\n ... <|im_end|>\n)
REPLY_PROMPT = 3  # the generation prompt (<|im_start|>assistant\n)
COUNT_TIMEOUT_S = 5.0
RESTING_S = 60.0
Messages = Sequence[dict[str, str]]


class Counter:
    """Counts tokens the way the server does when it can (`kind` "vllm" or "llama.cpp"), else
    estimates (`kind` None)."""

    def __init__(self, ref: RemoteRef, model: str, client: Any, kind: str | None = None) -> None:
        self.ref, self.model, self._client, self.kind = ref, model, client, kind
        self._plain = lru_cache(maxsize=256)(self._count_plain)
        self._chat = lru_cache(maxsize=64)(self._count_chat)
        self._resting_until = 0.0

    @property
    def exact(self) -> bool:
        return self.kind is not None

    @classmethod
    def detect(cls, ref: RemoteRef, model: str, client: Any) -> "Counter":
        """Ask the server once which tokenize endpoint it has (none: estimates)."""
        counter = cls(ref, model, client)
        for kind in ("vllm", "llama.cpp"):
            counter.kind = kind
            if counter._tokenize("Hello"):  # llama.cpp answers vLLM's form with []
                return counter
        counter.kind = None
        return counter

    def encode_plain(self, text: str) -> list[int]:
        return [0] * self._plain(text)

    def encode_chat(self, messages: Messages) -> list[int]:
        if not messages:
            return []
        return [0] * self._chat(tuple((m.get("role", ""), m.get("content", "")) for m in messages))

    # -- counting -----------------------------------------------------------------------------

    def _count_plain(self, text: str) -> int:
        n = self._tokenize(text) if text else 0
        return estimate(text) if n is None else n

    def _count_chat(self, messages: tuple[tuple[str, str], ...]) -> int:
        if self.kind == "vllm":
            n = self._tokenize_chat([{"role": r, "content": c} for r, c in messages])
            if n is not None:
                return n
        return sum(PER_MESSAGE + self._count_plain(c) for _, c in messages) + REPLY_PROMPT

    def _tokenize(self, text: str) -> int | None:
        body = {"model": self.model, "prompt": text} if self.kind == "vllm" else {"content": text}
        return self._post(body)

    def _tokenize_chat(self, messages: list[dict[str, str]]) -> int | None:
        return self._post({"model": self.model, "messages": messages, "add_generation_prompt": True})

    def _post(self, body: dict[str, Any]) -> int | None:
        """The token count the server answers, or None (no such endpoint, another shape, an error,
        no answer within COUNT_TIMEOUT_S: a face waits on this). After a failure the server is
        not asked for RESTING_S, so a server that went away costs one wait, not one per count."""
        if time.monotonic() < self._resting_until:
            return None
        try:
            answer = self._client.post(self.ref.root + "/tokenize", body=body, cast_to=object,
                                       options={"timeout": COUNT_TIMEOUT_S})
        except Exception:  # counting must never fail a chat; the estimate stands in
            self._resting_until = time.monotonic() + RESTING_S
            return None
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        return len(tokens) if isinstance(tokens, list) else None


def estimate_chat(messages: Messages) -> int:
    """About how many tokens the chat template makes of `messages` (no server asked)."""
    if not messages:
        return 0
    return sum(PER_MESSAGE + estimate(m.get("content", "")) for m in messages) + REPLY_PROMPT


def estimate(text: str) -> int:
    """About how many tokens `text` takes: ASCII at CHARS_PER_TOKEN a token, anything else a
    token per character (CJK, emoji)."""
    ascii_chars = sum(1 for c in text if c.isascii())
    return -(-ascii_chars // CHARS_PER_TOKEN) + (len(text) - ascii_chars)
