"""The message box's text when the app quits, kept for its next start: an unsent message was lost
without a word on Ctrl+Q (a new-user run). One file in the data folder, written whole (a crash
mid-write leaves the old one); when two windows quit, the last one's box is kept."""

from __future__ import annotations

import os
from pathlib import Path

from qwenchat import paths

FILE_NAME = "draft.txt"


def draft_path() -> Path:
    return paths.data_dir() / FILE_NAME


def keep(text: str) -> None:
    """Keep `text` for the next start, or forget the kept one when there is nothing to keep.
    Best effort: quitting must not fail over a draft (a full disk, a read-only folder)."""
    path = draft_path()
    try:
        if not text.strip():
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{FILE_NAME}.{os.getpid()}")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass


def take() -> str:
    """The text kept at the last quit ("" when none); it stays kept until the next quit."""
    try:
        return draft_path().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
