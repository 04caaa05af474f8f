"""Is the disk under the history database full, and where is it: the facts a "disk is full"
error names. SQLite reports a full disk as SQLITE_FULL only when a write of its own runs out;
when the wal-index (`-shm`) or the WAL itself cannot grow it says "disk I/O error", so the
store asks the filesystem."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Below this much free space SQLite cannot create its 32 KiB wal-index or grow a page: "full".
FULL_BELOW_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Space:
    mount: Path  # the mount point of the filesystem holding the database
    free: int  # bytes an unprivileged writer may still use


def space(path: Path) -> Space | None:
    """Free space on the filesystem holding `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return Space(mount_point(probe), st.f_bavail * st.f_frsize)


def is_full(path: Path) -> bool:
    found = space(path)
    return found is not None and found.free < FULL_BELOW_BYTES


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover
