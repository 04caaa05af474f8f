"""Export and import: a JSON document that round-trips a conversation exactly, and Markdown.

JSON (`format: "qwenchat.conversation"`, version 1) holds the conversation and *every* message
of its tree with their old ids, parents, statuses, token counts, meta and timestamps. Importing
gives new ids and keeps everything else identical, so export -> import -> export differs only in
ids. `export_all` wraps many (`format: "qwenchat.export"`). Markdown shows the active thread.
"""

from __future__ import annotations

from typing import Any

from qwenchat.errors import StoreError
from qwenchat.store.conversations import fetch_conversation
from qwenchat.store.db import StoreBase
from qwenchat.store.messages import insert_message
from qwenchat.store.records import ROLES, STATUSES, Conversation, Message, dumps, message_from_row

FORMAT_ONE = "qwenchat.conversation"
FORMAT_ALL = "qwenchat.export"
FORMAT_VERSION = 1

_MESSAGE_FIELDS = ("id", "parent_id", "role", "content", "status", "created_at", "finished_at",
                   "prompt_tokens", "completion_tokens", "meta")


def _bad(why: str) -> StoreError:
    return StoreError(
        f"not a qwenchat export: {why}",
        "import a file written by `qwenchat history export ID --format json` or `--all`",
    )


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
        """Import one exported conversation (new ids, everything else kept)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_ONE:
            raise _bad(f"expected format {FORMAT_ONE!r}")
        return self.import_data(data)[0]

    def import_data(self, data: Any) -> list[Conversation]:
        """Import a single-conversation export or an `--all` export, in one transaction."""
        if not isinstance(data, dict):
            raise _bad("the top level is not a JSON object")
        fmt = data.get("format")
        if fmt == FORMAT_ONE:
            items = [data]
        elif fmt == FORMAT_ALL:
            items = data.get("conversations")
            if not isinstance(items, list):
                raise _bad("'conversations' is not a list")
        else:
            raise _bad(f"unknown format {fmt!r}")
        version = data.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise _bad(f"unsupported version {version!r} (this qwenchat reads {FORMAT_VERSION})")
        checked = [_validate(item) for item in items]
        with self._write() as conn:
            new_ids = [_insert(conn, item) for item in checked]
            return [fetch_conversation(conn, i) for i in new_ids]


def _validate(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or item.get("format", FORMAT_ONE) != FORMAT_ONE:
        raise _bad("a conversation entry is not an object")
    for key in ("created_at", "updated_at"):
        if not isinstance(item.get(key), str):
            raise _bad(f"conversation field {key!r} is missing")
    if not isinstance(item.get("settings", {}), dict):
        raise _bad("'settings' is not an object")
    messages = item.get("messages", [])
    if not isinstance(messages, list):
        raise _bad("'messages' is not a list")
    ids = set()
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("id"), int):
            raise _bad("a message has no integer id")
        if m["id"] in ids:
            raise _bad(f"message id {m['id']} appears twice")
        ids.add(m["id"])
        if m.get("role") not in ROLES:
            raise _bad(f"message {m['id']} has role {m.get('role')!r}")
        if m.get("status", "complete") not in STATUSES:
            raise _bad(f"message {m['id']} has status {m.get('status')!r}")
        if not isinstance(m.get("content"), str) or not isinstance(m.get("created_at"), str):
            raise _bad(f"message {m['id']} lacks content or created_at")
        if not isinstance(m.get("meta", {}), dict):
            raise _bad(f"message {m['id']} has a meta that is not an object")
    for m in messages:
        if m.get("parent_id") is not None and m["parent_id"] not in ids:
            raise _bad(f"message {m['id']} has an unknown parent {m['parent_id']}")
    if item.get("head_id") is not None and item["head_id"] not in ids:
        raise _bad(f"head {item['head_id']} is not one of the messages")
    return item


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
                raise _bad(f"message {cur['id']} is its own ancestor")
            seen.add(cur["id"])
            chain.append(cur)
            parent = cur.get("parent_id")
            cur = by_id[parent] if parent is not None else None
        for c in reversed(chain):
            done.add(c["id"])
            out.append(c)
    return out


def _insert(conn: Any, item: dict[str, Any]) -> int:
    cur = conn.execute(
        "INSERT INTO conversations (title, model, system_prompt, settings, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (item.get("title"), item.get("model") or "", item.get("system_prompt"),
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
        lines += ["## System", "", conv.system_prompt.rstrip(), ""]
    for m in thread:
        lines += [f"## {m.role.capitalize()}", "", m.content.rstrip()]
        if m.status != "complete":
            lines += ["", f"*({m.status})*"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
