"""The SQLite connection under the history store: opening, pragmas, transactions, errors.

Contract: every write runs in one short `BEGIN IMMEDIATE` transaction (`StoreBase._write`),
so a crash or SIGKILL at any moment leaves the database at the last commit. The journal is WAL
with `synchronous=NORMAL`: a killed process loses nothing committed; a power cut may lose the
last transaction but never corrupts the file. Every sqlite3 error a user can act on (read-only
folder, full disk, a lock held too long) becomes a `StoreError` naming the path and the fix.
Reading needs no free space: opening an up-to-date WAL database writes nothing, and on a full
disk (where SQLite cannot create its -shm file) the connection falls back to exclusive locking,
which keeps the wal-index in memory.
This module knows nothing about conversations or messages.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from qwenchat.errors import StoreError
from qwenchat.store import disk

BUSY_TIMEOUT_MS = 10_000


def now() -> str:
    """A UTC timestamp as stored: ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def disk_full_error(path: Path) -> StoreError:
    """The disk under the database is full: say so, where, and that nothing was damaged."""
    found = disk.space(path)
    where = f" (the filesystem at {found.mount} has {disk.human(found.free)} free)" if found else ""
    mount = found.mount if found else path.parent
    return StoreError(
        f"the disk holding the history database {path} is full{where}; the last change was not saved",
        f"free some disk space on {mount} and try again (the database itself is intact), "
        "or set QWENCHAT_HOME to a folder on another disk",
    )


def translate(err: sqlite3.Error, path: Path) -> StoreError:
    """Turn an sqlite3 error into a StoreError a user can act on."""
    text = str(err)
    low = text.lower()
    code = getattr(err, "sqlite_errorname", "") or ""
    if code == "SQLITE_FULL" or "database or disk is full" in low or "disk is full" in low:
        return disk_full_error(path)
    # A WAL or wal-index (-shm) that cannot grow is reported as an I/O error (SQLITE_IOERR_*);
    # a write refused by a read-only fallback as "readonly": either way the disk may be the cause.
    if (code.startswith(("SQLITE_IOERR", "SQLITE_READONLY")) or "disk i/o error" in low
            or "readonly" in low) and disk.is_full(path):
        return disk_full_error(path)
    if "readonly" in low or "read-only" in low:
        return StoreError(
            f"the history database {path} is read-only",
            f"make {path.parent} and the files in it writable, "
            "or set QWENCHAT_HOME to a writable folder",
        )
    if "unable to open" in low:
        return StoreError(
            f"cannot open the history database {path}",
            f"check that {path.parent} exists and is writable, "
            "or set QWENCHAT_HOME to a writable folder",
        )
    if "locked" in low or "busy" in low:
        return StoreError(
            f"the history database {path} is busy (another qwenchat is holding a lock)",
            "try again in a moment",
        )
    if "malformed" in low or "not a database" in low or "file is encrypted" in low:
        return StoreError(
            f"the history database {path} is damaged or not a qwenchat database ({text})",
            f"move {path} aside to start a fresh history",
        )
    return StoreError(f"history database error at {path}: {text}")


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating its folder if needed) a connection in autocommit mode, FKs on.

    The journal mode is *not* switched here: `migrations.migrate` first checks the schema
    version, so a database from a newer qwenchat is refused without being touched.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise disk_full_error(path) from e
        raise StoreError(
            f"cannot create the history folder {path.parent}: {e.strerror or e}",
            "make the folder writable, or set QWENCHAT_HOME to a writable folder",
        ) from e
    if path.exists() and path.is_dir():
        raise StoreError(f"the history database path {path} is a folder", f"remove or rename {path}")
    try:
        return _open(path, exclusive=False)
    except sqlite3.Error as e:
        if not (path.is_file() and disk.is_full(path)):
            raise translate(e, path) from e
        # On a full disk SQLite cannot create the wal-index file (-shm) that every WAL reader
        # needs. In exclusive locking mode it keeps the wal-index in memory instead, so the
        # history can still be read; writes fail as "disk full". The price: other qwenchat
        # processes wait (busy) while this one has the database open, which they would on a
        # full disk anyway.
        try:
            return _open(path, exclusive=True)
        except sqlite3.Error:
            raise translate(e, path) from e


def _open(path: Path, *, exclusive: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if exclusive:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # before the first access: no -shm
        conn.execute("PRAGMA user_version").fetchone()  # fails here on a non-database file
    except BaseException:
        conn.close()  # a failed attempt must not keep a lock
        raise
    return conn


def enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """WAL and synchronous=NORMAL; switching the journal is a write, so only when needed
    (opening a database that is already WAL writes nothing: reads work on a full disk)."""
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")  # a setting of this connection, not a write
    except sqlite3.Error as e:
        raise translate(e, path) from e
    if str(mode).lower() != "wal":
        raise StoreError(
            f"cannot switch the history database {path} to WAL mode (got {mode!r})",
            "keep the database on a local disk, or set QWENCHAT_HOME to a local folder",
        )


@contextmanager
def write_tx(conn: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """One short write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise translate(e, path) from e
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as e:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        if isinstance(e, sqlite3.Error):
            raise translate(e, path) from e
        raise


class StoreBase:
    """Holds the connection; the feature mixins (conversations, presets, ...) build on it."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()  # the TUI may call from a worker thread

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, write_tx(self._conn, self.path) as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise translate(e, self.path) from e

    def others_version(self) -> int:
        """A number that changes when another connection (`qwenchat ask`, another window) has
        committed to the history since it was last read; this handle's own writes leave it."""
        with self._read() as conn:
            return conn.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
