"""The loaded engine as the server uses it: stateless requests (the client sends the whole
conversation each time), run on the generation queue's thread. The engine still reuses the
longest common prefix its KV cache holds, so a conversation's next turn prefills only its new
tokens. With `--save` a chat request goes through `saving.Saver` (ChatSession and the store).

The model loads after the server starts listening: until then `state` is "loading" (/health
says so, generation requests get a 503); a failed load is "failed" and stops the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from qwenchat.engine.records import Chunk, GenerateOptions, Reply

if TYPE_CHECKING:
    from qwenchat.server.saving import Saver

Events = Iterator["Chunk | Reply"]


class Backend:
    def __init__(self, base_options: GenerateOptions | None = None) -> None:
        self.base_options = base_options or GenerateOptions()
        self.loaded_at = 0
        self.engine: Any = None
        self.model_ids: tuple[str, ...] = ()  # listed by /v1/models: one model, one id
        self.aliases: tuple[str, ...] = ()  # other names requests may use for it
        self.saver: "Saver | None" = None
        self.error: BaseException | None = None
        self._ready = threading.Event()

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        return "ready" if self._ready.is_set() else "loading"

    def attach(self, engine: Any, names: Sequence[str | None], saver: "Saver | None" = None) -> None:
        """The model is loaded: `names` are what clients may call it (the name the user gave,
        the name it resolved to, its alias), duplicates and blanks dropped. The first is its id
        in /v1/models; the others are accepted, not listed: clients take each listed id for a
        model of its own (a picker showing it twice, `ask -m URL` asking which one)."""
        self.engine, self.saver = engine, saver
        unique = tuple(dict.fromkeys(n for n in names if n))
        self.model_ids, self.aliases = unique[:1], unique[1:]
        self.loaded_at = int(time.time())  # /v1/models' "created" (0 read as 1970 in clients)
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        self.error = error

    def knows(self, model: str | None) -> bool:
        return model is None or model in self.model_ids or model in self.aliases

    def chat(self, messages: list[dict[str, str]], options: GenerateOptions, cancel: threading.Event,
             continue_last: bool = False) -> Events:
        """continue_last: extend the last (assistant) message instead of answering after it."""
        if continue_last:
            return self.engine.chat(messages, options, cancel, continue_last=True)
        if self.saver is not None and self.saver.applies(messages):
            return self.saver.chat(messages, options, cancel)
        return self.engine.chat(messages, options, cancel)

    @property
    def context_window(self) -> int | None:
        return getattr(getattr(self.engine, "info", None), "context_window", None)

    def complete(self, prompt: str, options: GenerateOptions, cancel: threading.Event) -> Events:
        return self.engine.complete(prompt, options, cancel)

    def tokenize(self, messages: list[dict[str, str]] | None, prompt: str | None) -> list[int]:
        """The token ids of a conversation as the chat template makes it (with the assistant's
        turn opened, what a reply follows), or of plain text."""
        if messages is not None:
            return self.engine.encode_chat(messages)
        return self.engine.tokenizer.encode_plain(prompt or "")
