"""The plain records a `ChatSession` hands to the faces (a finished turn, a message of the active
branch, what to show about the model) and the option helpers it shares with its reply writer.
Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from qwenchat.engine.records import GenerateOptions, Reply

if TYPE_CHECKING:
    from qwenchat.store.records import Message

OPTION_FIELDS = tuple(f.name for f in fields(GenerateOptions) if f.name != "stop")
SAMPLING_FIELDS = tuple(f for f in OPTION_FIELDS if f not in ("max_new_tokens", "constraint"))


@dataclass(frozen=True)
class Turn:
    """The end of one exchange: the engine's reply and where it was stored (None: not saved).
    `note` tells the user something they should know (the conversation branched)."""

    reply: Reply
    conversation_id: int | None
    user_message_id: int | None
    message_id: int | None
    note: str | None = None


@dataclass
class Entry:
    role: str
    content: str
    id: int | None = None
    status: str = "complete"
    created_at: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def finish_reason(self) -> str | None:
        return self.meta.get("finish_reason")


@dataclass(frozen=True)
class ModelInfo:
    """What a face shows about the loaded model."""

    label: str
    device: str
    dtype: str
    precision: str  # what the weights compute in: "int8", "bfloat16", ...
    context_window: int
    chat_tuned: bool
    placement_reason: str = ""
    notes: tuple[str, ...] = ()  # what the load had to say (a damaged int8 cache rebuilt, ...)
    load_s: float = 0.0
    server: str | None = None  # a remote model's server (its API base URL); None: a local model
    exact_tokens: bool = True  # False: token counts before a reply are the server's estimates


def overlay(base: GenerateOptions, top: GenerateOptions) -> GenerateOptions:
    """`base` with every field that `top` sets."""
    return replace(base, **{k: v for k, v in asdict(top).items() if k in OPTION_FIELDS and v is not None})


def options_dict(options: GenerateOptions) -> dict[str, Any]:
    return {k: v for k, v in asdict(options).items() if k in OPTION_FIELDS and v is not None}


def entry_of(m: "Message") -> Entry:
    return Entry(m.role, m.content, m.id, m.status, m.created_at, dict(m.meta))


def branch_of(store: Any, entry: Entry) -> tuple[int, int]:
    """(position from 1, count) of a stored `entry` among its alternatives (regenerations,
    edits); (1, 1) when it has none or is not stored."""
    if store is None or entry.id is None:
        return 1, 1
    ids = [m.id for m in store.siblings(entry.id)]
    return ids.index(entry.id) + 1, len(ids)
