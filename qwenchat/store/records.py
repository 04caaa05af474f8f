"""The typed records the store returns, and how rows become them.

Plain frozen dataclasses: callers (the session, the TUI, the CLI) never see sqlite rows.
Timestamps are ISO 8601 UTC strings exactly as stored, so exports round-trip byte for byte.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
Status = Literal["pending", "complete", "interrupted", "error"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
# "pending": an assistant reply being generated (add_message, then finish_message).
STATUSES: tuple[str, ...] = ("pending", "complete", "interrupted", "error")

TITLE_LENGTH = 50


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str | None
    model: str
    system_prompt: str | None
    settings: dict[str, Any]
    created_at: str
    updated_at: str
    head_id: int | None
    message_count: int = 0

    @property
    def display_title(self) -> str:
        return self.title or "(untitled)"


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    parent_id: int | None
    role: Role
    content: str
    status: Status
    created_at: str
    finished_at: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Less-queried facts: model revision, device, dtype, seed, sampling settings, timings.
    meta: dict[str, Any] = field(default_factory=dict)


def reply_constraint(role: str, meta: dict[str, Any] | None) -> Any:
    """The output constraint (JSON) a reply was written under, from the settings stored in its
    meta; None for none, and for a reply whose process died before it ended (nothing guessed)."""
    settings = (meta or {}).get("settings")
    return settings.get("constraint") if role == "assistant" and isinstance(settings, dict) else None


@dataclass(frozen=True)
class Preset:
    name: str
    text: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    conversation_title: str | None
    message_id: int
    role: Role
    snippet: str
    created_at: str


def loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def dumps(value: dict[str, Any] | None) -> str:
    """Settings or meta as stored: the top-level keys sorted (the same facts give the same text),
    nested objects in their own order, which can be meaningful: a JSON schema's `properties`
    order is the order the reply's fields are written in (sort_keys=True lost it)."""
    value = value or {}
    return json.dumps({k: value[k] for k in sorted(value)}, ensure_ascii=False)


def conversation_from_row(row: sqlite3.Row) -> Conversation:
    keys = row.keys()
    return Conversation(
        id=row["id"],
        title=row["title"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        settings=loads(row["settings"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        head_id=row["head_id"],
        message_count=row["message_count"] if "message_count" in keys else 0,
    )


def message_from_row(row: sqlite3.Row) -> Message:
    meta = loads(row["meta"])
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        role=row["role"],
        content=row["content"],
        status=_settled(row["status"], meta),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        meta=meta,
    )


def _settled(status: str, meta: dict[str, Any]) -> str:
    """A reply still "pending" whose writer process is gone (killed mid-reply, even by SIGKILL)
    is read as "interrupted": its text is what the writer saved as it went. Reads never write,
    so this works on a read-only or full disk too."""
    pid = meta.get("pid") if status == "pending" else None
    if not isinstance(pid, int) or pid <= 0:
        return status
    return status if pid_alive(pid) else "interrupted"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or a check we cannot make: assume it lives
    return True


def preset_from_row(row: sqlite3.Row) -> Preset:
    return Preset(row["name"], row["text"], row["created_at"], row["updated_at"])


def make_title(text: str, limit: int = TITLE_LENGTH) -> str | None:
    """`text` on one line (whitespace collapsed), cut at a word boundary near `limit`."""
    line = " ".join(text.split())
    if not line:
        return None
    if len(line) <= limit:
        return line
    cut = line[: limit + 1].rsplit(" ", 1)[0] if " " in line[: limit + 1] else ""
    if len(cut) < limit // 2:  # one very long word: cut inside it
        cut = line[:limit]
    return cut.rstrip(" ,.;:-") + "…"
