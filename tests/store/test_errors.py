"""A data folder that cannot be written, and a disk that fills up mid-write.

Read-only folders are made with chmod. Root ignores file modes, so when the tests run as root
the same refusals are produced at the OS boundary instead: creating a folder under the
read-only one raises PermissionError, and SQLite opens files there read-only (`mode=ro`), so
SQLite itself reports the real "unable to open" / "readonly database" errors.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from qwenchat.errors import StoreError
from qwenchat.paths import database_file
from qwenchat.store import Store


@pytest.fixture
def make_readonly(monkeypatch: pytest.MonkeyPatch):
    made: list[Path] = []

    def under(path: str | Path) -> bool:
        return any(Path(path).resolve().is_relative_to(p.resolve()) for p in made)

    if os.geteuid() == 0:
        real_mkdir, real_connect = Path.mkdir, sqlite3.connect

        def mkdir(self: Path, *args, **kwargs):
            if under(self) and not self.exists():
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        def connect(database, *args, **kwargs):
            if isinstance(database, str) and under(database):
                return real_connect(f"file:{database}?mode=ro", *args, uri=True, **kwargs)
            return real_connect(database, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        monkeypatch.setattr(sqlite3, "connect", connect)

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(stat.S_IRUSR | stat.S_IXUSR)
        made.append(path)
        return path

    yield make
    for p in made:
        p.chmod(stat.S_IRWXU)


def _assert_names_path_and_fix(err: StoreError, path: Path) -> None:
    assert str(path) in err.message
    assert "QWENCHAT_HOME" in (err.hint or "") and "writable" in (err.hint or "")


def test_missing_data_dir_under_a_readonly_home(isolated_home: Path, make_readonly) -> None:
    make_readonly(isolated_home)
    with pytest.raises(StoreError) as err:
        Store.open()
    _assert_names_path_and_fix(err.value, database_file().parent)
    assert "cannot create the history folder" in err.value.message


def test_empty_readonly_data_dir(make_readonly) -> None:
    make_readonly(database_file().parent)
    with pytest.raises(StoreError) as err:
        Store.open()
    _assert_names_path_and_fix(err.value, database_file())


def test_existing_database_in_a_readonly_data_dir(make_readonly) -> None:
    with Store.open() as store:
        store.create_conversation("m", title="old")
    make_readonly(database_file().parent)
    with pytest.raises(StoreError) as err:
        with Store.open() as store:
            store.create_conversation("m", title="new")
    _assert_names_path_and_fix(err.value, database_file())


def test_data_dir_blocked_by_a_file(isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True)
    (isolated_home / "data").write_text("not a folder")
    with pytest.raises(StoreError) as err:
        Store.open()
    _assert_names_path_and_fix(err.value, isolated_home / "data")


def test_disk_full_during_a_write_is_a_clear_error_and_the_db_stays_intact(
    store: Store,
) -> None:
    conv = store.create_conversation("m", title="full")
    kept = [store.add_message(conv.id, "user", f"message {i}") for i in range(5)]
    conn = store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is now full
    with pytest.raises(StoreError) as err:
        store.add_message(conv.id, "assistant", "x" * 200_000)
    assert "full" in err.value.message and str(store.path) in err.value.message
    assert "free some disk space" in err.value.hint
    assert not conn.in_transaction
    # nothing half-written: the head and the thread are as before, and the file is sound
    assert store.get_conversation(conv.id).head_id == kept[-1].id
    assert [m.id for m in store.thread(conv.id)] == [m.id for m in kept]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # once there is space again, writing works
    conn.execute("PRAGMA max_page_count = 1073741823")
    store.add_message(conv.id, "assistant", "x" * 200_000)
    assert len(store.thread(conv.id)) == 6


def test_disk_full_from_a_finish_keeps_the_pending_reply(store: Store) -> None:
    conv = store.create_conversation("m")
    store.add_message(conv.id, "user", "q")
    reply = store.add_message(conv.id, "assistant", "", status="pending")
    conn = store._conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StoreError):
        store.finish_message(reply.id, content="y" * 300_000, status="complete")
    got = store.get_message(reply.id)
    assert got.status == "pending" and got.content == ""
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
