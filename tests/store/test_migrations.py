"""Schema migrations: a fresh database, a real upgrade from version 1, a newer one refused."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from qwenchat.errors import StoreError
from qwenchat.paths import database_file
from qwenchat.store import SCHEMA_VERSION, Store

# Version 1 exactly as it shipped (tables, no full-text index), written with raw SQL so the
# test does not depend on the migration code it checks.
V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT, model TEXT NOT NULL DEFAULT '',
    system_prompt TEXT, settings TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, head_id INTEGER REFERENCES messages(id) ON DELETE SET NULL);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'complete'
        CHECK (status IN ('pending', 'complete', 'interrupted', 'error')),
    prompt_tokens INTEGER, completion_tokens INTEGER, created_at TEXT NOT NULL,
    finished_at TEXT, meta TEXT NOT NULL DEFAULT '{}');
CREATE INDEX messages_conversation ON messages(conversation_id, id);
CREATE INDEX messages_parent ON messages(parent_id);
CREATE INDEX conversations_updated ON conversations(updated_at);
CREATE TABLE presets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, text TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
INSERT INTO conversations (id, title, model, created_at, updated_at, head_id)
    VALUES (1, 'old chat', 'm', '2024-01-01T00:00:00.000000+00:00',
            '2024-01-01T00:00:01.000000+00:00', 2);
INSERT INTO messages (id, conversation_id, parent_id, role, content, created_at)
    VALUES (1, 1, NULL, 'user', 'tell me about pelicans', '2024-01-01T00:00:00.000000+00:00');
INSERT INTO messages (id, conversation_id, parent_id, role, content, created_at)
    VALUES (2, 1, 1, 'assistant', 'pelicans are large water birds',
            '2024-01-01T00:00:01.000000+00:00');
PRAGMA user_version = 1;
"""


def _version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def test_fresh_database_is_created_at_latest_version_in_wal_mode() -> None:
    path = database_file()
    assert not path.exists()
    with Store.open() as store:
        assert store.path == path
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"conversations", "messages", "presets", "messages_fts"} <= tables
    assert _version(path) == SCHEMA_VERSION == 2


def test_reopening_does_not_reapply_migrations(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Store.open(path) as store:
        store.create_conversation("m", title="kept")
    with Store.open(path) as store:
        assert [c.title for c in store.list_conversations()] == ["kept"]
    assert _version(path) == SCHEMA_VERSION


def test_upgrade_from_version_1_keeps_data_and_indexes_it(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    conn.close()
    assert _version(path) == 1

    with Store.open(path) as store:
        conv = store.get_conversation(1)
        assert conv.title == "old chat" and conv.head_id == 2
        assert [m.content for m in store.thread(1)] == [
            "tell me about pelicans", "pelicans are large water birds"]
        # migration 2 built the FTS index over the rows that were already there ...
        assert {h.message_id for h in store.search("pelicans")} == {1, 2}
        # ... and its triggers keep new rows in sync
        store.add_message(1, "user", "and flamingos?")
        assert [h.message_id for h in store.search("flamingos")] == [3]
    assert _version(path) == 2


def test_failed_migration_rolls_back_and_keeps_version(tmp_path: Path, monkeypatch) -> None:
    from qwenchat.store import migrations

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    conn.close()
    broken = migrations.MIGRATIONS[:1] + [(2, "broken", "CREATE TABLE x (a);\nSELECT nope();")]
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    with pytest.raises(StoreError):
        Store.open(path)
    assert _version(path) == 1
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "x" not in names  # the half-applied migration was rolled back


def test_database_from_a_newer_version_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert f"schema version {SCHEMA_VERSION + 7}" in err.value.message
    assert "newer" in err.value.message and str(path) in err.value.message
    assert "upgrade qwenchat" in err.value.hint
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not Path(str(path) + "-wal").exists()
    assert _version(path) == SCHEMA_VERSION + 7


def test_a_file_that_is_not_a_database_gives_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert str(path) in err.value.message
    assert err.value.hint
