"""Conversations: create, find, list, rename, update and delete them.

A conversation carries its model, system prompt and sampling settings, and `head_id`, the last
message of the active branch (see `messages.py` for the tree). Deleting one deletes its messages.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from qwenchat.errors import StoreError
from qwenchat.store.db import StoreBase, now
from qwenchat.store.records import Conversation, conversation_from_row, dumps

_SELECT = """
SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count
FROM conversations c
"""

_UNSET: Any = object()


def no_conversation(conversation_id: int) -> StoreError:
    return StoreError(
        f"no conversation {conversation_id}",
        "`qwenchat history list` shows the conversations and their ids",
    )


def fetch_conversation(conn: sqlite3.Connection, conversation_id: int) -> Conversation:
    row = conn.execute(_SELECT + " WHERE c.id = ?", (conversation_id,)).fetchone()
    if row is None:
        raise no_conversation(conversation_id)
    return conversation_from_row(row)


class ConversationsMixin(StoreBase):
    def create_conversation(
        self,
        model: str,
        system_prompt: str | None = None,
        settings: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> Conversation:
        stamp = now()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO conversations (title, model, system_prompt, settings, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (title, model, system_prompt, dumps(settings), stamp, stamp),
            )
            return fetch_conversation(conn, int(cur.lastrowid))

    def get_conversation(self, conversation_id: int) -> Conversation:
        with self._read() as conn:
            return fetch_conversation(conn, conversation_id)

    def latest_conversation(self) -> Conversation | None:
        with self._read() as conn:
            row = conn.execute(_SELECT + " ORDER BY c.updated_at DESC, c.id DESC LIMIT 1").fetchone()
            return conversation_from_row(row) if row else None

    def list_conversations(
        self, limit: int | None = None, query: str | None = None
    ) -> list[Conversation]:
        """Newest first (by last update). `query` matches titles and message text."""
        sql, params = _SELECT, []
        if query:
            from qwenchat.store.search import fts_query

            sql += (
                " WHERE c.title LIKE ? ESCAPE '\\' OR c.id IN (SELECT m.conversation_id FROM"
                " messages m JOIN messages_fts f ON f.rowid = m.id WHERE messages_fts MATCH ?)"
            )
            like = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params += [f"%{like}%", fts_query(query)]
        sql += " ORDER BY c.updated_at DESC, c.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, int(limit)))
        with self._read() as conn:
            return [conversation_from_row(r) for r in conn.execute(sql, params)]

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        title = " ".join(title.split())
        if not title:
            raise StoreError("a conversation title cannot be empty", "give a title with some text")
        # housekeeping, not use: the chat keeps its place in the list and `-c` does not move to it
        return self.update_conversation(conversation_id, title=title, touch=False)

    def update_conversation(
        self,
        conversation_id: int,
        *,
        title: str | None = _UNSET,
        system_prompt: str | None = _UNSET,
        settings: dict[str, Any] | None = _UNSET,
        model: str = _UNSET,
        touch: bool = True,
    ) -> Conversation:
        """Change only the fields given (None clears title and system prompt); `touch`: it counts
        as use of the conversation (`updated_at`: the most recent is what `-c` continues)."""
        changes: dict[str, Any] = {}
        if title is not _UNSET:
            changes["title"] = title
        if system_prompt is not _UNSET:
            changes["system_prompt"] = system_prompt
        if settings is not _UNSET:
            changes["settings"] = dumps(settings)
        if model is not _UNSET:
            changes["model"] = model
        with self._write() as conn:
            fetch_conversation(conn, conversation_id)
            if touch:
                changes["updated_at"] = now()
            assignments = ", ".join(f"{k} = ?" for k in changes)
            conn.execute(
                f"UPDATE conversations SET {assignments} WHERE id = ?",
                (*changes.values(), conversation_id),
            )
            return fetch_conversation(conn, conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        with self._write() as conn:
            fetch_conversation(conn, conversation_id)
            conn.execute("UPDATE conversations SET head_id = NULL WHERE id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
