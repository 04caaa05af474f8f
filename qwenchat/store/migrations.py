"""Numbered schema migrations, applied in order when the store opens.

Each migration runs in its own `BEGIN IMMEDIATE` transaction together with the
`PRAGMA user_version = N` that records it, so a database is always at exactly one version.
A database whose version is newer than `SCHEMA_VERSION` was written by a newer qwenchat: it is
refused before anything (not even the journal mode) is changed.

Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from qwenchat.errors import StoreError
from qwenchat.store.db import enable_wal, translate

# 1: the tables. Timestamps are ISO 8601 UTC text; JSON columns hold objects.
V1_SCHEMA = """
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    title         TEXT,
    model         TEXT NOT NULL DEFAULT '',
    system_prompt TEXT,
    settings      TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    head_id       INTEGER REFERENCES messages(id) ON DELETE SET NULL
);
CREATE TABLE messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id   INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id         INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    role              TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content           TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'complete'
                      CHECK (status IN ('pending', 'complete', 'interrupted', 'error')),
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    created_at        TEXT NOT NULL,
    finished_at       TEXT,
    meta              TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX messages_conversation ON messages(conversation_id, id);
CREATE INDEX messages_parent ON messages(parent_id);
CREATE INDEX conversations_updated ON conversations(updated_at);
CREATE TABLE presets (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""

# 2: full-text search over message text, an external-content FTS5 index kept in sync by
# triggers (which also fire for the cascade when a conversation is deleted).
V2_FTS = """
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "tables", V1_SCHEMA),
    (2, "full-text search", V2_FTS),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _refuse_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the history database {path} has schema version {version}, written by a newer "
            f"qwenchat (this one knows up to version {SCHEMA_VERSION}); it was left untouched",
            "upgrade qwenchat, or set QWENCHAT_HOME to another folder",
        )


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the database up to SCHEMA_VERSION; returns the version found at open."""
    try:
        found = user_version(conn)
    except sqlite3.Error as e:
        raise translate(e, path) from e
    _refuse_newer(found, path)
    enable_wal(conn, path)
    for number, _name, sql in MIGRATIONS:
        if number <= found:
            continue
        try:
            conn.execute("BEGIN IMMEDIATE")
            current = user_version(conn)  # another process may have migrated meanwhile
            _refuse_newer(current, path)
            if current < number:
                for statement in _split(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise translate(e, path) from e
            raise
    return found


def _split(script: str) -> list[str]:
    """Split a migration script into statements (executescript would COMMIT on its own)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
