"""A scripted stand-in for `ChatEngine`, torch-free, for tests of the faces (the TUI, the CLI)
that run the REAL `ChatSession` on top of it, so session and faces cannot drift apart.

It has the engine surface the session uses: `info`, `defaults`, `settings()`, `chat()`
(with `continue_last`), `complete()`, `encode_chat()` and `tokenizer.encode_plain()`. A "token"
is a word. Replies come from `script` (used in order, then `default`) and stream word by word;
a reply longer than max_new_tokens stops there with finish_reason "length". `hold` (a
threading.Event) pauses a reply after its first word until it is set or the reply is
cancelled, so a test can act mid-reply deterministically. `prompts` records every request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from qwenchat.engine.errors import ContextOverflowError, SettingsError
from qwenchat.engine.records import Chunk, GenerateOptions, Reply, Timings, Usage

SAMPLING_DEFAULTS = dict(temperature=0.7, top_k=20, top_p=0.8, min_p=0.0, repetition_penalty=1.05, seed=None)


@dataclass(frozen=True)
class FakeInfo:
    name: str = "fake-model"
    path: Path = Path("/nonexistent/fake-model")
    device: str = "cpu"
    dtype: str = "float32"
    placement_reason: str = "fake engine"
    context_window: int = 4096
    has_chat_template: bool = True
    chat_tuned: bool = True
    load_s: float = 0.0
    quantize: str = "int8"
    notes: tuple[str, ...] = ()


@dataclass
class FakeEngine:
    script: list[str] = field(default_factory=list)
    default: str = "Hello from the fake model."
    hold: threading.Event | None = None
    info: FakeInfo = field(default_factory=FakeInfo)
    max_new_tokens: int = 512
    delay: float = 0.0  # seconds per word, for tests that act while a reply streams
    prompts: list[list[dict[str, str]]] = field(default_factory=list)
    closed: bool = False  # close() was called (a remote engine lets go of its connections)

    def __post_init__(self) -> None:
        self.defaults = SimpleNamespace(sampling=SimpleNamespace(**SAMPLING_DEFAULTS),
                                        max_new_tokens=self.max_new_tokens)
        self.tokenizer = SimpleNamespace(encode_plain=_words)

    # -- the engine surface the session uses ----------------------------------------------------

    def close(self) -> None:
        self.closed = True

    def settings(self, options: GenerateOptions | None) -> int:
        """Validates like the real engine; returns the max_new_tokens in force."""
        o = options or GenerateOptions()
        if o.temperature is not None and not 0 <= o.temperature <= 100:
            raise SettingsError(f"temperature {o.temperature} is out of range", "use a value from 0 to 2")
        limit = self.defaults.max_new_tokens if o.max_new_tokens is None else o.max_new_tokens
        if limit <= 0:
            raise SettingsError(f"max_new_tokens is {limit}; it must be at least 1")
        return limit

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        ids: list[int] = []
        for m in messages:
            ids += [0, 0] + _words(m.get("content", ""))  # two "tokens" of template per message
        return ids

    def chat(self, messages: Sequence[dict[str, str]], options: GenerateOptions | None = None,
             cancel: threading.Event | None = None, continue_last: bool = False) -> Iterator[Chunk | Reply]:
        limit = self.settings(options)
        if not messages:
            raise SettingsError("the conversation is empty", "send a message")
        n = len(self.encode_chat(messages))
        if n + min(limit, self.info.context_window // 4) > self.info.context_window:
            raise ContextOverflowError(f"the conversation's last message needs {n} tokens, "
                                       f"but the context window holds {self.info.context_window}",
                                       "shorten the input")
        self.prompts.append([dict(m) for m in messages])
        text = self.script.pop(0) if self.script else self.default
        return self._stream(text, limit, cancel or threading.Event(), n, leading=continue_last)

    def complete(self, text: str, options: GenerateOptions | None = None,
                 cancel: threading.Event | None = None) -> Iterator[Chunk | Reply]:
        limit = self.settings(options)
        if not text:
            raise SettingsError("the prompt is empty", "give some text to continue")
        self.prompts.append([{"role": "raw", "content": text}])
        reply = self.script.pop(0) if self.script else self.default
        return self._stream(reply, limit, cancel or threading.Event(), len(_words(text)), leading=True)

    def reset_cache(self) -> None:
        pass

    # -- the scripted reply -----------------------------------------------------------------------

    def _stream(self, text: str, limit: int, cancel: threading.Event, prompt_tokens: int,
                leading: bool) -> Iterator[Chunk | Reply]:
        words = text.split(" ")
        parts: list[str] = []
        reason = "stop"
        for i, word in enumerate(words):
            if cancel.is_set():
                reason = "cancelled"
                break
            if i >= limit:
                reason = "length"
                break
            piece = word if i == 0 and not leading else " " + word
            parts.append(piece)
            yield Chunk(piece)
            if self.delay:
                time.sleep(self.delay)
            if i == 0 and self.hold is not None:
                while not self.hold.wait(0.01) and not cancel.is_set():
                    pass
        said = "".join(parts)
        usage = Usage(prompt_tokens=prompt_tokens, cached_tokens=max(0, prompt_tokens - 8),
                      prefilled_tokens=min(prompt_tokens, 8), completion_tokens=len(parts))
        timings = Timings(ttft_s=0.25, prefill_s=0.2, decode_s=1.0, prefill_tok_s=40.0, decode_tok_s=42.0)
        yield Reply(said, reason, usage, timings)


def _words(text: str) -> list[int]:
    return [0] * len(text.split())


def engine_factory(**kwargs: Any):
    """A session factory for the app: (model, store, progress) -> a real ChatSession over a new
    FakeEngine(**kwargs); the sessions made are kept in `factory.made`."""
    from qwenchat.session import ChatSession

    made: list[ChatSession] = []

    def factory(model: str | None, store: Any, progress: Any) -> ChatSession:
        s = ChatSession(FakeEngine(**kwargs), store, model_label=model or "fake-model")
        made.append(s)
        return s

    factory.made = made  # type: ignore[attr-defined]
    return factory
