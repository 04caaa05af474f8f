"""A scripted stand-in for `ChatSession`: same methods, the same records (`Chunk`s, then a
`Turn` with a `Reply`; all torch-free), a real `Store` underneath, and no model or torch.

Replies come from `script` (a list used in order, then `default`); each is streamed word by
word. `hold` (a threading.Event) pauses the stream after the first chunk until it is set or
the reply is cancelled, so tests can stop a reply mid-way deterministically.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from qwenchat.engine.errors import SettingsError
from qwenchat.engine.records import Chunk, GenerateOptions as Options, Reply, Timings, Usage
from qwenchat.session import OPTION_FIELDS as OPTION_KEYS, Entry, Turn


def _opts(o: Options) -> dict:
    return {k: getattr(o, k) for k in OPTION_KEYS if getattr(o, k) is not None}


class FakeSession:
    def __init__(self, store: Any, *, script: list[str] | None = None, default: str = "Hello from the fake model.",
                 hold: threading.Event | None = None, chat_template: bool = True, model_label: str = "fake-model") -> None:
        self.store, self.script, self.default, self.hold = store, list(script or []), default, hold
        self.model_label = model_label
        self.engine = SimpleNamespace(
            info=SimpleNamespace(name=model_label, device="cpu", dtype="float32", context_window=4096,
                                 has_chat_template=chat_template, chat_tuned=chat_template),
            defaults=SimpleNamespace(
                sampling=SimpleNamespace(temperature=0.7, top_k=20, top_p=0.8, min_p=0.0,
                                         repetition_penalty=1.05, seed=None),
                max_new_tokens=512),
        )
        self.system_prompt: str | None = None
        self.options = Options()
        self.raw = False
        self.entries: list[Entry] = []
        self.conversation_id: int | None = None
        self.prompts: list[list[dict]] = []  # what each reply was asked with
        self._cancel = threading.Event()

    # conversations
    def load(self, conversation_id: int) -> Any:
        conv = self.store.get_conversation(conversation_id)
        self.conversation_id, self.system_prompt = conv.id, conv.system_prompt
        saved = {k: v for k, v in (conv.settings or {}).items() if k in OPTION_KEYS}
        self.options = replace(Options(), **saved)
        self.entries = [Entry(m.role, m.content, m.id, m.status) for m in self.store.thread(conv.id)]
        return conv

    def new(self, system_prompt: str | None = None) -> None:
        self.conversation_id, self.entries, self.system_prompt = None, [], system_prompt

    def set_options(self, options: Options) -> None:
        if options.temperature is not None and options.temperature > 100:
            raise SettingsError(f"temperature {options.temperature} is absurd", "use a value from 0 to 2")
        self.options = options
        if self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, settings=_opts(options))

    def set_system_prompt(self, text: str | None) -> None:
        self.system_prompt = text or None
        if self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, system_prompt=self.system_prompt)

    @property
    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [{"role": e.role, "content": e.content} for e in self.entries]

    # turns
    def send(self, text: str):
        self.entries.append(Entry("user", text, self._save("user", text)))
        return self._reply()

    def regenerate(self):
        while self.entries and self.entries[-1].role == "assistant":
            self.entries.pop()
        if not self.entries:
            raise ValueError("there is no message to answer yet")
        self._head(self.entries[-1].id)
        return self._reply()

    def edit(self, index: int, text: str):
        if not (0 <= index < len(self.entries)) or self.entries[index].role != "user":
            raise ValueError(f"entry {index} is not a user message")
        del self.entries[index:]
        self._head(self.entries[-1].id if self.entries else None)
        return self.send(text)

    def cancel(self) -> None:
        self._cancel.set()

    def _reply(self):
        self._cancel.clear()
        self.prompts.append(self.messages)
        text = self.script.pop(0) if self.script else self.default
        words = text.split(" ")
        parts: list[str] = []
        reason = "stop"
        for i, w in enumerate(words):
            if self._cancel.is_set():
                reason = "cancelled"
                break
            piece = w if i == 0 else " " + w
            parts.append(piece)
            yield Chunk(piece)
            if i == 0 and self.hold is not None:
                while not self.hold.wait(0.01):
                    if self._cancel.is_set():
                        break
        said = "".join(parts)
        status = "interrupted" if reason == "cancelled" else "complete"
        msg_id = self._save("assistant", said, status)
        self.entries.append(Entry("assistant", said, msg_id, status))
        user_id = self.entries[-2].id if len(self.entries) > 1 else None
        usage = Usage(prompt_tokens=40, cached_tokens=12, prefilled_tokens=28, completion_tokens=len(parts))
        timings = Timings(ttft_s=0.25, prefill_s=0.2, decode_s=1.0, prefill_tok_s=140.0, decode_tok_s=42.0)
        yield Turn(Reply(said, reason, usage, timings), self.conversation_id, user_id, msg_id)

    def _save(self, role: str, content: str, status: str = "complete") -> int:
        if self.conversation_id is None:
            conv = self.store.create_conversation(self.model_label, self.system_prompt, settings=_opts(self.options))
            self.conversation_id = conv.id
        return self.store.add_message(self.conversation_id, role, content, status=status).id

    def _head(self, message_id: int | None) -> None:
        if self.conversation_id is not None:
            self.store.set_head(self.conversation_id, message_id)


def fake_factory(**kwargs: Any):
    """A session factory for `QwenchatApp` that records the sessions it made."""
    made: list[FakeSession] = []

    def factory(model: str | None, store: Any, progress: Any) -> FakeSession:
        opts = dict(kwargs)
        label = model or opts.pop("model_label", "fake-model")
        opts.pop("model_label", None)
        s = FakeSession(store, model_label=label, **opts)
        made.append(s)
        return s

    factory.made = made  # type: ignore[attr-defined]
    return factory
