"""Messages and the conversation tree.

Messages form a tree through `parent_id`. Nothing is ever overwritten by an edit or a
regenerate; a new branch is added and the old one stays:
  - edit: a new user message whose parent is the edited message's parent (`edit_message`);
  - regenerate: a new assistant message whose parent is the same user message
    (`add_message(cid, "assistant", "", parent_id=user.id, status="pending")`).
The conversation's `head_id` points at the active branch's last message; the active thread is
head -> root, returned root first by `thread`.

Streaming protocol for the session layer: commit the user message with `add_message` before
generation starts; then either `add_message(..., status="pending")` at the start of the reply
and `finish_message(id, content=..., status=...)` when it ends or is interrupted, or one
`add_message(..., status="complete"|"interrupted"|"error")` at the end.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from qwenchat.errors import ConversationChanged, StoreError
from qwenchat.store.conversations import fetch_conversation
from qwenchat.store.db import StoreBase, now
from qwenchat.store.records import (
    ROLES,
    STATUSES,
    Message,
    dumps,
    loads,
    make_title,
    message_from_row,
)


class _Head:
    def __repr__(self) -> str:
        return "HEAD"


HEAD: Final[Any] = _Head()
"""Default `parent_id`: attach the new message after the conversation's current head."""

UNCHECKED: Final[Any] = object()
"""Default `expect_head`: the message is added whatever the conversation's head is."""


def fetch_message(conn: sqlite3.Connection, message_id: int) -> Message:
    row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise StoreError(
            f"no message {message_id}", "`qwenchat history show ID` shows a conversation's messages"
        )
    return message_from_row(row)


def _check(role: str, status: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")


def insert_message(
    conn: sqlite3.Connection,
    conversation_id: int,
    parent_id: int | None,
    role: str,
    content: str,
    *,
    status: str,
    created_at: str,
    finished_at: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    meta: dict[str, Any] | None,
) -> int:
    """Insert one row inside the caller's transaction (also used by import)."""
    cur = conn.execute(
        "INSERT INTO messages (conversation_id, parent_id, role, content, status, prompt_tokens,"
        " completion_tokens, created_at, finished_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (conversation_id, parent_id, role, content, status, prompt_tokens, completion_tokens,
         created_at, finished_at, dumps(meta)),
    )
    return int(cur.lastrowid)


def _merged_meta(conn: sqlite3.Connection, message_id: int, meta: dict[str, Any]) -> str:
    """A message's stored meta with `meta` merged in (a key whose value is None removed), as JSON."""
    row = conn.execute("SELECT meta FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise StoreError(f"no message {message_id}")
    return dumps({k: v for k, v in (loads(row["meta"]) | meta).items() if v is not None})


class MessagesMixin(StoreBase):
    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        parent_id: int | None = HEAD,
        status: str = "complete",
        meta: dict[str, Any] | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        expect_head: int | None = UNCHECKED,
    ) -> Message:
        """Commit a message after `parent_id` (the head by default; None: a new root) and move
        the head to it. The first user message of an untitled conversation becomes its title.

        `expect_head`: the head the caller last read. If another process has moved it since,
        nothing is written and `ConversationChanged` is raised; checked inside the write
        transaction, so of two processes sending after the same head, one gets through."""
        _check(role, status)
        with self._write() as conn:
            conv = fetch_conversation(conn, conversation_id)
            if expect_head is not UNCHECKED and conv.head_id != expect_head:
                raise ConversationChanged(conv.id)
            parent = conv.head_id if parent_id is HEAD else parent_id
            if parent is not None and fetch_message(conn, parent).conversation_id != conv.id:
                raise StoreError(f"message {parent} is not in conversation {conv.id}")
            stamp = now()
            finished = None if status == "pending" else stamp
            new_id = insert_message(
                conn, conv.id, parent, role, content, status=status, created_at=stamp,
                finished_at=finished, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens, meta=meta,
            )
            title = conv.title
            if title is None and role == "user":
                title = make_title(content)
            conn.execute(
                "UPDATE conversations SET head_id = ?, updated_at = ?, title = ? WHERE id = ?",
                (new_id, stamp, title, conv.id),
            )
            return fetch_message(conn, new_id)

    def finish_message(
        self,
        message_id: int,
        *,
        content: str,
        status: str = "complete",
        meta: dict[str, Any] | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> Message:
        """Commit the final text and status of a reply; `meta` is merged into the stored meta."""
        if status == "pending":
            raise ValueError("finish_message needs a final status, not 'pending'")
        _check("assistant", status)
        with self._write() as conn:
            row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"no message {message_id}")
            merged = loads(row["meta"]) | (meta or {})
            stamp = now()
            conn.execute(
                "UPDATE messages SET content = ?, status = ?, meta = ?, finished_at = ?,"
                " prompt_tokens = coalesce(?, prompt_tokens),"
                " completion_tokens = coalesce(?, completion_tokens) WHERE id = ?",
                (content, status, dumps(merged), stamp, prompt_tokens, completion_tokens,
                 message_id),
            )
            conn.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (stamp, row["conversation_id"]),
            )
            return fetch_message(conn, message_id)

    def save_partial(self, message_id: int, content: str) -> None:
        """Store the text a pending reply has so far (the head does not move): what survives if
        the process is killed mid-reply. A reply that is no longer pending is left alone."""
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET content = ? WHERE id = ? AND status = 'pending'",
                (content, message_id),
            )

    def reopen_message(self, message_id: int, meta: dict[str, Any] | None = None) -> None:
        """Mark a stored reply as being written again (a continuation): "pending" until
        `finish_message`; `meta` is merged into its meta."""
        with self._write() as conn:
            conn.execute("UPDATE messages SET status = 'pending', meta = ? WHERE id = ?",
                         (_merged_meta(conn, message_id, meta or {}), message_id))

    def merge_meta(self, message_id: int, meta: dict[str, Any]) -> None:
        """Merge `meta` into a message's stored meta; a key whose value is None is removed."""
        with self._write() as conn:
            conn.execute("UPDATE messages SET meta = ? WHERE id = ?", (_merged_meta(conn, message_id, meta), message_id))

    def get_message(self, message_id: int) -> Message:
        with self._read() as conn:
            return fetch_message(conn, message_id)

    def edit_message(self, message_id: int, content: str) -> Message:
        """Add an edited copy of a message as its sibling (the old branch stays); moves head."""
        old = self.get_message(message_id)
        return self.add_message(old.conversation_id, old.role, content, parent_id=old.parent_id)

    def thread(self, conversation_id: int) -> list[Message]:
        """The active branch, root first: head -> root through parent_id, reversed."""
        with self._read() as conn:
            conv = fetch_conversation(conn, conversation_id)
            if conv.head_id is None:
                return []
            rows = conn.execute(
                """
                WITH RECURSIVE chain(id, depth) AS (
                    SELECT ?, 0
                    UNION ALL
                    SELECT m.parent_id, chain.depth + 1 FROM messages m JOIN chain ON m.id = chain.id
                    WHERE m.parent_id IS NOT NULL
                )
                SELECT m.* FROM chain JOIN messages m ON m.id = chain.id ORDER BY chain.depth DESC
                """,
                (conv.head_id,),
            ).fetchall()
            return [message_from_row(r) for r in rows]

    def set_head(self, conversation_id: int, message_id: int | None) -> None:
        """Make `message_id` the end of the active branch (None: an empty thread)."""
        with self._write() as conn:
            conv = fetch_conversation(conn, conversation_id)
            if message_id is not None and fetch_message(conn, message_id).conversation_id != conv.id:
                raise StoreError(f"message {message_id} is not in conversation {conv.id}")
            conn.execute(
                "UPDATE conversations SET head_id = ?, updated_at = ? WHERE id = ?",
                (message_id, now(), conv.id),
            )

    def siblings(self, message_id: int) -> list[Message]:
        """The alternatives at a branch point (this message included), oldest first."""
        with self._read() as conn:
            msg = fetch_message(conn, message_id)
            rows = conn.execute(
                "SELECT * FROM messages WHERE conversation_id = ? AND parent_id IS ? ORDER BY id",
                (msg.conversation_id, msg.parent_id),
            )
            return [message_from_row(r) for r in rows]

    def latest_leaf(self, message_id: int) -> Message:
        """The newest message in the subtree under `message_id` (itself if it has no replies):
        where the head goes when the user switches to that branch."""
        with self._read() as conn:
            row = conn.execute(
                """
                WITH RECURSIVE sub(id) AS (
                    SELECT ? UNION ALL SELECT m.id FROM messages m JOIN sub ON m.parent_id = sub.id
                )
                SELECT m.* FROM messages m WHERE m.id = (SELECT max(id) FROM sub)
                """,
                (message_id,),
            ).fetchone()
            if row is None:
                return fetch_message(conn, message_id)
            return message_from_row(row)
