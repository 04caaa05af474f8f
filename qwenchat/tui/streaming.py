"""The text of a streaming reply on its way from the generation thread to the UI thread.

The worker `add`s chunks under a lock; a timer on the UI thread `take`s what arrived, so a fast
model costs a bounded number of re-renders. It also counts the chunks (one per decoded token,
give or take a held-back partial character) for the live token count and rate in the status bar,
and the takes that moved text (the screen's updates of the reply, for `updates_per_s`).

`GilHandoff` (qwenchat/gil_handoff.py) shortens the interpreter's switch interval while a reply streams.
"""

from __future__ import annotations

import threading
import time

from qwenchat.gil_handoff import STREAMING_SWITCH_INTERVAL, GilHandoff  # noqa: F401 - the screen's

class ReplyBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self.tokens = 0
        self._first: float | None = None  # when the first chunk arrived
        self._last: float | None = None
        self.updates = 0  # takes that returned text
        self._updated: tuple[float, float] | None = None  # when the first and the latest of them happened

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
            self.tokens, self._first, self._last = 0, None, None
            self.updates, self._updated = 0, None

    def add(self, text: str) -> None:
        """From the worker thread."""
        now = time.monotonic()
        with self._lock:
            self._pending.append(text)
            self.tokens += 1
            self._first = self._first if self._first is not None else now
            self._last = now

    def take(self) -> str:
        with self._lock:
            text = "".join(self._pending)
            self._pending.clear()
        if text:
            now = time.monotonic()
            self.updates += 1
            self._updated = (self._updated[0] if self._updated else now, now)
        return text

    @property
    def updates_per_s(self) -> float | None:
        """How often the reply's view was updated, from the first update to the latest."""
        if self._updated is None or self._updated[1] <= self._updated[0]:
            return None
        return (self.updates - 1) / (self._updated[1] - self._updated[0])

    @property
    def tok_s(self) -> float | None:
        """Decode rate so far: tokens after the first over the time since the first."""
        with self._lock:
            if self._first is None or self._last is None or self.tokens < 2 or self._last <= self._first:
                return None
            return (self.tokens - 1) / (self._last - self._first)
