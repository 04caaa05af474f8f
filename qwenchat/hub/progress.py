"""How a download reports to a UI: the `DownloadProgress` protocol, a silent default, and the
tqdm-compatible bar class that feeds huggingface_hub's per-file progress into overall counts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger("qwenchat.hub")


class DownloadProgress(Protocol):
    """What a UI implements to show a download. Called from the downloading thread.

    `on_note` is optional: an implementation without it has its notes logged (to stderr)."""

    def on_start(self, repo_id: str, files: Sequence[tuple[str, int]], total_bytes: int) -> None:
        """Before the first byte: the files still to fetch (name, size) and their total."""

    def on_bytes(self, filename: str, file_done: int, file_total: int, done: int, total: int) -> None:
        """Bytes received so far, for the current file and overall."""

    def on_finish(self) -> None:
        """Every file is in the cache (or the download failed; also called then)."""


class NullProgress:
    """A DownloadProgress that shows no bar; subclass it to override only what you need.
    Its notes (a damaged file repaired, a file the Hub gave no hash for) still reach the log."""

    def on_start(self, repo_id: str, files: Sequence[tuple[str, int]], total_bytes: int) -> None:
        pass

    def on_bytes(self, filename: str, file_done: int, file_total: int, done: int, total: int) -> None:
        pass

    def on_finish(self) -> None:
        pass

    def on_note(self, text: str) -> None:
        log.warning("%s", text)


def note(progress: DownloadProgress, text: str) -> None:
    """Tell the user something about the files' integrity, through the UI when it listens."""
    on_note = getattr(progress, "on_note", None)
    if callable(on_note):
        on_note(text)
    else:
        log.warning("%s", text)


class Tally:
    """Overall byte counts across files, feeding a DownloadProgress."""

    def __init__(self, progress: DownloadProgress, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def bar_class(self, filename: str, size: int) -> type:
        """A tqdm-compatible class for `hf_hub_download(tqdm_class=...)`, reporting to us."""
        tally = self

        class _Bar:
            def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kw: Any) -> None:
                self.total = total or size
                self.n = 0
                self.update(initial)

            def update(self, n: int | float | None = 1) -> None:
                n = int(n or 0)
                self.n += n
                tally.done += n
                tally.progress.on_bytes(filename, self.n, self.total or 0, tally.done, tally.total)

            def update_transfer(self, n: int) -> None:  # Xet transfer bytes: counted by update()
                pass

            def set_postfix_str(self, *a: Any, **k: Any) -> None:
                pass

            set_transfer_postfix_str = set_description = refresh = set_postfix_str

            def close(self) -> None:
                pass

            def __enter__(self) -> _Bar:
                return self

            def __exit__(self, *exc: Any) -> None:
                pass

        return _Bar
