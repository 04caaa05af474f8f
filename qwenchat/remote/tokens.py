"""Token counts for a remote model: what the session needs to show context use and to check a
message's size. No server API counts tokens everywhere, so these are estimates (`exact` False):
the lengths matter, the ids are placeholders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qwenchat.remote.reference import RemoteRef

CHARS_PER_TOKEN = 4  # byte-level BPE on English and code; other scripts count a token per character
PER_MESSAGE = 4  # the template's tokens around each message (<|im_start|>role\n ... <|im_end|>\n)
REPLY_PROMPT = 3  # the generation prompt (<|im_start|>assistant\n)


class Counter:
    def __init__(self, ref: RemoteRef, model: str, api_key: str | None, client: Any) -> None:
        self.ref, self.model, self._key, self._client = ref, model, api_key, client
        self.exact = False

    def encode_plain(self, text: str) -> list[int]:
        return [0] * estimate(text)

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        n = sum(PER_MESSAGE + estimate(m.get("content", "")) for m in messages)
        return [0] * (n + REPLY_PROMPT if messages else 0)


def estimate(text: str) -> int:
    """About how many tokens `text` takes: ASCII at CHARS_PER_TOKEN a token, anything else a
    token per character (CJK, emoji)."""
    ascii_chars = sum(1 for c in text if c.isascii())
    return -(-ascii_chars // CHARS_PER_TOKEN) + (len(text) - ascii_chars)
