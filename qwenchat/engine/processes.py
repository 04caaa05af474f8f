"""Whether the process that left a temporary file or folder behind is still running, so work in
progress is never removed from under a live writer and a killed writer's leftovers are."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

STALE_S = 24 * 3600  # a leftover this old is stale even if its pid is in use again


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process, or no such pid form: keep
        return True
    return True


def others_leftovers(folder: Path, pattern: re.Pattern[str]) -> Iterator[tuple[Path, int]]:
    """(entry, pid) for each entry of `folder` whose name `pattern` matches, with the writer's pid
    as its group "pid", written by another process than this one (nothing if unreadable)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m is not None and int(m.group("pid")) != os.getpid():
            yield entry, int(m.group("pid"))


def remove_leftovers(folder: Path, pattern: re.Pattern[str]) -> None:
    """Delete the files `pattern` matches that processes now gone left behind (killed, or quit
    while a daemon thread was writing)."""
    for entry, pid in others_leftovers(folder, pattern):
        try:
            if time.time() - entry.stat().st_mtime > STALE_S or not alive(pid):
                entry.unlink()
        except OSError:
            pass
