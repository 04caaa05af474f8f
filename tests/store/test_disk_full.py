"""A full disk under the history (issue 12 item 13): reading the history still works, and every
write says that the disk is full and where, never a bare "disk I/O error".

The real test mounts a small tmpfs (root only, where mounting is allowed) and fills it, so SQLite
meets ENOSPC itself: its wal-index (-shm) cannot be created, the WAL cannot grow. Where mounting
is not possible that test skips with the reason, and the fault-injected one below still runs.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenchat.errors import StoreError
from qwenchat.store import Store, db, disk

ROOT = Path(__file__).resolve().parents[2]


def _fill(folder: Path) -> None:
    """Write a filler file until the filesystem refuses another byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert disk.is_full(folder)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the fault-injected test covers this")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the fault-injected test covers this")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QWENCHAT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "qwenchat", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)


def _history(home: Path) -> int:
    with Store.open(home / "data" / "history.db") as store:
        conv = store.create_conversation("m", title="kept on a full disk")
        store.add_message(conv.id, "user", "hello")
        store.add_message(conv.id, "assistant", "hi there")
        return conv.id


def _assert_disk_full(text: str, where: Path) -> None:
    assert "is full" in text and str(where) in text, text
    assert "free some disk space" in text and "Traceback" not in text


def test_on_a_really_full_disk_reads_work_and_writes_say_where(small_disk: Path, tiny_model: Path) -> None:
    home = small_disk / "home"
    conv_id = _history(home)
    _fill(small_disk)

    listed = _cli(["history", "list"], home)
    assert listed.returncode == 0, listed.stderr
    assert "kept on a full disk" in listed.stdout
    shown = _cli(["history", "show", str(conv_id)], home)
    assert shown.returncode == 0 and "hi there" in shown.stdout, shown.stderr

    renamed = _cli(["history", "rename", str(conv_id), "new"], home)
    assert renamed.returncode == 1
    _assert_disk_full(renamed.stderr, small_disk)
    asked = _cli(["ask", "-c", "-m", str(tiny_model), "--quantize", "none", "--max-tokens", "2", "more"], home)
    assert asked.returncode == 1
    _assert_disk_full(asked.stderr, small_disk)

    (small_disk / "filler").unlink()  # space again: the history is intact and writable
    with Store.open(home / "data" / "history.db") as store:
        assert [m.content for m in store.thread(conv_id)] == ["hello", "hi there"]
        assert store.get_conversation(conv_id).title == "kept on a full disk"
        store.add_message(conv_id, "user", "after")


def test_a_disk_that_fills_while_the_store_is_open(small_disk: Path) -> None:
    home = small_disk / "home"
    conv_id = _history(home)
    with Store.open(home / "data" / "history.db") as store:
        _fill(small_disk)
        with pytest.raises(StoreError) as err:
            store.add_message(conv_id, "user", "x" * 100_000)  # the WAL cannot grow
        _assert_disk_full(str(err.value), small_disk)
        assert [m.content for m in store.thread(conv_id)] == ["hello", "hi there"]


def test_full_disk_faults_injected_at_the_sqlite_layer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Where no tmpfs can be mounted: SQLite's -shm failure and a statvfs reporting no space."""
    home = tmp_path / "home"
    conv_id = _history(home)
    path = home / "data" / "history.db"
    real_open = db._open

    def shm_fails(p: Path, *, exclusive: bool) -> sqlite3.Connection:
        if not exclusive:  # what SQLite says when it cannot size the -shm file
            raise sqlite3.OperationalError("disk I/O error")
        return real_open(p, exclusive=exclusive)

    monkeypatch.setattr(db, "_open", shm_fails)
    monkeypatch.setattr(disk, "space", lambda p: disk.Space(tmp_path, 0))
    with Store.open(path) as store:
        assert [m.content for m in store.thread(conv_id)] == ["hello", "hi there"]
    err = db.translate(sqlite3.OperationalError("disk I/O error"), path)
    _assert_disk_full(str(err), tmp_path)
    assert "0 bytes free" in err.message


def test_an_io_error_with_space_left_is_not_called_a_full_disk(tmp_path: Path) -> None:
    err = db.translate(sqlite3.OperationalError("disk I/O error"), tmp_path / "history.db")
    assert "full" not in err.message and "disk I/O error" in err.message
