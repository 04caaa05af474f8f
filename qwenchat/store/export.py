"""Export and import: a JSON document that round-trips a conversation exactly, and Markdown.

JSON (`format: "qwenchat.conversation"`, version 1) holds the conversation and *every* message
of its tree with their old ids, parents, statuses, token counts, meta and timestamps. Importing
gives new ids and keeps everything else identical, so export -> import -> export differs only in
ids. `export_all` wraps many (`format: "qwenchat.export"`). Markdown shows the active thread.
An import is checked completely before anything is written (`import_check`). A conversation the
history already holds (same start, every exported message there) is not imported twice unless
asked: restoring a backup twice must not double every chat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from qwenchat.store.conversations import fetch_conversation
from qwenchat.store.db import StoreBase
from qwenchat.store.import_check import FORMAT_ALL, FORMAT_ONE, FORMAT_VERSION, bad, validate
from qwenchat.store.messages import insert_message
from qwenchat.store.records import Conversation, Message, dumps, message_from_row, reply_constraint

_MESSAGE_FIELDS = ("id", "parent_id", "role", "content", "status", "created_at", "finished_at",
                   "prompt_tokens", "completion_tokens", "meta")


@dataclass
class Imported:
    conversations: list[Conversation] = field(default_factory=list)
    present: list[int] = field(default_factory=list)  # ids of chats already held, not imported again


class ExportMixin(StoreBase):
    def export_conversation(self, conversation_id: int) -> dict[str, Any]:
        with self._read() as conn:
            conv = fetch_conversation(conn, conversation_id)
            rows = conn.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conv.id,)
            ).fetchall()
        messages = [message_from_row(r) for r in rows]
        return {
            "format": FORMAT_ONE,
            "version": FORMAT_VERSION,
            "id": conv.id,
            "title": conv.title,
            "model": conv.model,
            "system_prompt": conv.system_prompt,
            "settings": conv.settings,
            "created_at": conv.created_at,
            "updated_at": conv.updated_at,
            "head_id": conv.head_id,
            "messages": [{k: getattr(m, k) for k in _MESSAGE_FIELDS}
                         for m in messages],
        }

    def export_all(self) -> dict[str, Any]:
        with self._read() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM conversations ORDER BY id")]
        return {
            "format": FORMAT_ALL,
            "version": FORMAT_VERSION,
            "conversations": [self.export_conversation(i) for i in ids],
        }

    def import_conversation(self, data: dict[str, Any]) -> Conversation:
        """Import one exported conversation as a copy (new ids, everything else kept)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_ONE:
            raise bad(f"expected format {FORMAT_ONE!r}")
        return self.import_data(data, again=True).conversations[0]

    def import_data(self, data: Any, *, again: bool = False) -> Imported:
        """Import a single-conversation export or an `--all` export: every field is checked
        first (`import_check.validate`), then everything is written in one transaction.
        Conversations already held are skipped unless `again` (then they are copied)."""
        checked = validate(data)
        result = Imported()
        with self._write() as conn:
            for item in checked:
                held = None if again else _held(conn, item)
                if held is not None:
                    result.present.append(held)
                else:
                    result.conversations.append(fetch_conversation(conn, _insert(conn, item)))
        return result


def _parents_first(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order messages so that each parent comes before its children (id order when possible)."""
    by_id = {m["id"]: m for m in messages}
    done: set[int] = set()
    out: list[dict[str, Any]] = []
    for m in sorted(messages, key=lambda m: m["id"]):
        chain, seen = [], set()
        cur: dict[str, Any] | None = m
        while cur is not None and cur["id"] not in done:
            if cur["id"] in seen:
                raise bad(f"message {cur['id']} is its own ancestor")
            seen.add(cur["id"])
            chain.append(cur)
            parent = cur.get("parent_id")
            cur = by_id[parent] if parent is not None else None
        for c in reversed(chain):
            done.add(c["id"])
            out.append(c)
    return out


def _held(conn: Any, item: dict[str, Any]) -> int | None:
    """The id of a conversation begun at the same moment that holds every exported message
    (role, text and time): the same chat, maybe continued since the export."""
    wanted = {(m["role"], m["content"], m["created_at"]) for m in item.get("messages", [])}
    for (conv_id,) in conn.execute("SELECT id FROM conversations WHERE created_at = ? ORDER BY id",
                                   (item["created_at"],)).fetchall():
        rows = conn.execute("SELECT role, content, created_at FROM messages WHERE conversation_id = ?", (conv_id,))
        if wanted <= {tuple(r) for r in rows}:
            return int(conv_id)
    return None


def _insert(conn: Any, item: dict[str, Any]) -> int:
    cur = conn.execute(
        "INSERT INTO conversations (title, model, system_prompt, settings, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (item["title"], item["model"], item["system_prompt"],
         dumps(item.get("settings")), item["created_at"], item["updated_at"]),
    )
    conv_id = int(cur.lastrowid)
    mapping: dict[int, int] = {}
    for m in _parents_first(item.get("messages", [])):
        parent = m.get("parent_id")
        mapping[m["id"]] = insert_message(
            conn, conv_id, mapping[parent] if parent is not None else None, m["role"],
            m["content"], status=m.get("status", "complete"), created_at=m["created_at"],
            finished_at=m.get("finished_at"), prompt_tokens=m.get("prompt_tokens"),
            completion_tokens=m.get("completion_tokens"), meta=m.get("meta"),
        )
    head = item.get("head_id")
    conn.execute(
        "UPDATE conversations SET head_id = ? WHERE id = ?",
        (mapping[head] if head is not None else None, conv_id),
    )
    return conv_id


def to_markdown(conv: Conversation, thread: list[Message]) -> str:
    """The active thread as Markdown: a title, a few facts, then one section per message."""
    lines = [f"# {conv.display_title}", ""]
    lines += [f"- conversation: {conv.id}", f"- model: {conv.model or '(unknown)'}",
              f"- created: {conv.created_at}", f"- updated: {conv.updated_at}", ""]
    if conv.system_prompt:
        lines += ["## System", "", _verbatim(conv.system_prompt), ""]
    for m in thread:
        # Replies are Markdown already; what a person typed is plain text, whose line breaks
        # and indentation a Markdown reader would otherwise collapse (or read as headings).
        # A JSON reply is fenced too: bare, a Markdown reader runs it into one paragraph.
        if reply_constraint(m.role, m.meta) is not None:
            body = _verbatim(m.content, "json")
        else:
            body = m.content.rstrip() if m.role == "assistant" else _verbatim(m.content)
        lines += [f"## {m.role.capitalize()}", "", body]
        if m.status != "complete":
            lines += ["", f"*({m.status})*"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _verbatim(text: str, info: str = "text") -> str:
    """`text` as a fenced block that shows it exactly: the fence is longer than any run of
    backticks inside, so no line of the text can close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip(chr(10))}\n{fence}"
