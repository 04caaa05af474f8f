"""Whether the process that left a temporary file or folder behind is still running, so work in
progress is never removed from under a live writer and a killed writer's leftovers are."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process, or no such pid form: keep
        return True
    return True
