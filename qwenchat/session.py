"""`ChatSession`: one conversation, where the engine and the history store meet.

Both `qwenchat ask` and the TUI talk to the model only through this class, so neither repeats
the other's logic. The session owns the message list (the active branch of the conversation
tree), the engine (with its KV cache) and the store handle. It commits the user's message before
generation starts and the reply when it ends, including when it is cancelled or interrupted by
Ctrl+C (saved with status "interrupted"), so no committed word is ever lost.

It knows nothing about terminals or widgets, and never touches tensors.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwenchat.engine.records import Chunk, GenerateOptions, Reply

if TYPE_CHECKING:
    from qwenchat.config import Settings
    from qwenchat.engine import prefetch
    from qwenchat.engine.chat import ChatEngine
    from qwenchat.models import ResolvedModel
    from qwenchat.store import Store
    from qwenchat.store.records import Conversation, Message

OPTION_FIELDS = tuple(f.name for f in fields(GenerateOptions) if f.name != "stop")


@dataclass(frozen=True)
class Turn:
    """The end of one exchange: the engine's reply and where it was stored (None: not saved)."""

    reply: Reply
    conversation_id: int | None
    user_message_id: int | None
    message_id: int | None


@dataclass
class Entry:
    role: str
    content: str
    id: int | None = None
    status: str = "complete"


class ChatSession:
    def __init__(
        self,
        engine: ChatEngine,
        store: "Store | None" = None,
        *,
        model_label: str | None = None,
        system_prompt: str | None = None,
        options: GenerateOptions | None = None,
        raw: bool = False,
    ) -> None:
        self.engine, self.store = engine, store
        self.model_label = model_label or engine.info.name
        self.system_prompt = system_prompt
        self.options = options or GenerateOptions()
        self.raw = raw  # raw text continuation (base models), no chat template
        self.entries: list[Entry] = []
        self.conversation_id: int | None = None
        self._cancel = threading.Event()

    # -- conversations ----------------------------------------------------------------------

    def load(self, conversation_id: int) -> "Conversation":
        """Continue a stored conversation: its system prompt, settings and active branch."""
        assert self.store is not None, "loading a conversation needs a store"
        conv = self.store.get_conversation(conversation_id)
        self.conversation_id = conv.id
        self.system_prompt = conv.system_prompt
        saved = {k: v for k, v in (conv.settings or {}).items() if k in OPTION_FIELDS}
        self.options = GenerateOptions(**{**_options_dict(self.options), **saved})
        self.entries = [_entry(m) for m in self.store.thread(conv.id)]
        return conv

    def new(self, system_prompt: str | None = None) -> None:
        """Start a fresh conversation (stored on the first message)."""
        self.conversation_id, self.entries, self.system_prompt = None, [], system_prompt

    def set_options(self, options: GenerateOptions) -> None:
        self.engine.settings(options)  # validates: a bad value never reaches generation
        self.options = options
        if self.store is not None and self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, settings=_options_dict(options))

    def set_system_prompt(self, text: str | None) -> None:
        self.system_prompt = text or None
        if self.store is not None and self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, system_prompt=self.system_prompt)

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation as the engine sees it: system prompt first, then the active branch."""
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [{"role": e.role, "content": e.content} for e in self.entries]

    # -- turns ------------------------------------------------------------------------------

    def send(self, text: str) -> Iterator[Chunk | Turn]:
        """Add the user's message and stream the reply: `Chunk`s, then one `Turn`.

        The prompt is built (and checked against the context window) before the message is
        committed, so a message that cannot be answered is refused without being stored."""
        self.entries.append(Entry("user", text))
        try:
            events = self._start()
        except BaseException:
            self.entries.pop()
            raise
        self.entries[-1].id = self._save("user", text)
        return self._stream(events)

    def regenerate(self) -> Iterator[Chunk | Turn]:
        """Replace the last reply with a new one (the old one stays in the store's tree)."""
        while self.entries and self.entries[-1].role == "assistant":
            self.entries.pop()
        if not self.entries:
            raise ValueError("there is no message to answer yet")
        self._move_head(self.entries[-1].id)
        return self._stream(self._start())

    def edit(self, index: int, text: str) -> Iterator[Chunk | Turn]:
        """Replace the user message at `index` in `entries` and answer again; later turns are
        dropped from the active branch (the old branch stays in the store)."""
        if not (0 <= index < len(self.entries)) or self.entries[index].role != "user":
            raise ValueError(f"entry {index} is not a user message")
        del self.entries[index:]
        self._move_head(self.entries[-1].id if self.entries else None)
        return self.send(text)

    def cancel(self) -> None:
        """Stop the reply in progress (from any thread) within one token."""
        self._cancel.set()

    def _start(self) -> Iterator[Chunk | Reply]:
        """Build the prompt and return the engine's event stream (errors surface here)."""
        self._cancel.clear()
        if self.raw:
            return self.engine.complete(self._raw_prompt(), self.options, self._cancel)
        return self.engine.chat(self.messages, self.options, self._cancel)

    def _stream(self, events: Iterator[Chunk | Reply]) -> Iterator[Chunk | Turn]:
        user_id = self.entries[-1].id if self.entries else None
        parts: list[str] = []
        done = False
        try:
            for event in events:
                if isinstance(event, Chunk):
                    parts.append(event.text)
                    yield event
                else:
                    status = "interrupted" if event.finish_reason == "cancelled" else "complete"
                    msg_id = self._finish("".join(parts) if self.raw else event.text, status, event)
                    done = True
                    yield Turn(event, self.conversation_id, user_id, msg_id)
        except BaseException:
            # Ctrl+C, a closed generator or an engine failure mid-reply: keep what was said.
            if parts and not done:
                self._finish("".join(parts), "interrupted", None)
            raise

    def _raw_prompt(self) -> str:
        return "".join(e.content for e in self.entries)

    # -- storage ----------------------------------------------------------------------------

    def _save(
        self, role: str, content: str, status: str = "complete", meta: dict | None = None, reply: Reply | None = None
    ) -> int | None:
        if self.store is None:
            return None
        if self.conversation_id is None:
            conv = self.store.create_conversation(
                self.model_label, self.system_prompt, settings=_options_dict(self.options)
            )
            self.conversation_id = conv.id
        counts = {}
        if reply is not None:
            counts = {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens}
        return self.store.add_message(self.conversation_id, role, content, status=status, meta=meta, **counts).id

    def _finish(self, text: str, status: str, reply: Reply | None) -> int | None:
        meta = _reply_meta(self, reply)
        msg_id = self._save("assistant", text, status, meta, reply)
        self.entries.append(Entry("assistant", text, msg_id, status))
        return msg_id

    def _move_head(self, message_id: int | None) -> None:
        if self.store is not None and self.conversation_id is not None:
            self.store.set_head(self.conversation_id, message_id)


def _options_dict(options: GenerateOptions) -> dict[str, Any]:
    return {k: v for k, v in asdict(options).items() if k in OPTION_FIELDS and v is not None}


def _entry(m: "Message") -> Entry:
    return Entry(m.role, m.content, m.id, m.status)


def _reply_meta(session: ChatSession, reply: Reply | None) -> dict[str, Any]:
    info = session.engine.info
    meta: dict[str, Any] = {
        "model": session.model_label,
        "device": info.device,
        "dtype": info.dtype,
        "settings": _options_dict(session.options),
    }
    if reply is not None:
        meta |= {
            "finish_reason": reply.finish_reason,
            "usage": asdict(reply.usage),
            "timings": asdict(reply.timings),
            "dropped_messages": reply.dropped_messages,
        }
    return meta


def options_from_settings(settings: "Settings", stop: tuple[str, ...] = ()) -> GenerateOptions:
    """Generation options from layered settings (flags > env > config file); unset fields
    fall back to the model's generation_config.json inside the engine."""
    return GenerateOptions(
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        repetition_penalty=settings.repetition_penalty,
        max_new_tokens=settings.max_tokens,
        seed=settings.seed,
        stop=stop,
    )


def load_engine(
    settings: "Settings", progress: Any = None, resolved: "ResolvedModel | None" = None
) -> tuple[ChatEngine, str]:
    """Find (downloading if needed) the model the settings name and load it; `resolved` skips
    the finding when the caller has done it already (to show a download before a spinner).

    Returns the engine and the model's name as shown to users and stored with conversations.
    """
    from qwenchat.engine import prefetch
    from qwenchat.models import resolve_model
    from qwenchat.paths import kernels_dir

    resolved = resolved or resolve_model(settings.model, progress=progress)
    ahead = _read_ahead(settings, resolved.path)  # before torch is imported: it reads meanwhile
    try:
        from qwenchat.engine.chat import ChatEngine

        engine = ChatEngine.load(
            resolved.path, device=settings.device, dtype=settings.dtype, max_context=settings.context_limit,
            quantize=settings.quantize, kernel_dir=kernels_dir(),
        )
    finally:
        if ahead is not None:
            prefetch.discard(ahead)  # frees it if the engine chose other weights (or failed)
    return engine, resolved.name


def _read_ahead(settings: "Settings", model_dir: Path) -> "prefetch.Prefetch | None":
    """Start reading the model's int8 weight cache on another core while torch is imported (a
    third of a second of a cold start), when the engine will most likely use it: int8 asked for
    (any device), or left to the engine on a CPU-only machine with the dtype left to it too (the
    rules of engine/device.py's choose_quantize). A wrong guess costs only that background read."""
    from qwenchat.engine import prefetch

    quantize = (settings.quantize or "auto").strip().lower()
    device = (settings.device or "auto").strip().lower()
    dtype = (settings.dtype or "auto").strip().lower()
    path = prefetch.int8_cache_path(model_dir)
    if quantize == "none" or not path.is_file():
        return None
    on_cpu = device == "cpu" or (device == "auto" and not _gpu_likely())
    if quantize == "auto" and not (on_cpu and dtype == "auto"):
        return None
    return prefetch.start(path)


def _gpu_likely() -> bool:
    """Whether torch will probably find a GPU (CUDA, ROCm or Apple's), guessed without torch."""
    return sys.platform == "darwin" or any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd"))


def fit_text(engine: ChatEngine, messages: list[dict[str, str]], text: str, cut: str, reserve: int) -> tuple[str, int]:
    """Shorten `text` (the last user message's material) until the conversation fits the context
    window; `cut` is "head" (drop the beginning) or "tail" (drop the end). Returns the shortened
    text and how many tokens were dropped."""
    ids = engine.tokenizer.encode_plain(text)
    window = engine.info.context_window
    overhead = len(engine.encode_chat(messages + [{"role": "user", "content": ""}]))
    keep = window - reserve - overhead
    while keep > 0:
        kept = ids[-keep:] if cut == "head" else ids[:keep]
        short = engine.tokenizer.decode(kept, skip_special_tokens=False)
        if len(engine.encode_chat(messages + [{"role": "user", "content": short}])) + reserve <= window:
            return short, len(ids) - len(kept)
        keep -= max(1, keep // 20)  # re-tokenised text can come out a little longer
    return "", len(ids)
