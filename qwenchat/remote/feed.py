"""A server's event stream read in a daemon thread, so a cancel takes effect at once even while
the server has sent nothing yet (a long prompt being prefilled, a 429 being waited out).

The reader thread opens the request (`open_(stop)`, which may wait and retry) and hands each
event over a queue; the consumer, in the caller's thread, polls the caller's `cancel`. Once it
is set (or the consumer stops reading), `stop` is set: the thread reads at most the event in
flight, then closes the HTTP stream, so the server sees the client leave.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

POLL_S = 0.02  # how often the consumer looks at `cancel` while waiting


class Feed:
    def __init__(self, open_: Callable[[threading.Event], Any], cancel: threading.Event) -> None:
        self.cancel, self.stop = cancel, threading.Event()
        self.cancelled = False  # the consumer stopped because `cancel` was set
        self.response: Any = None  # the HTTP response, once the server answered
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._read, args=(open_,), daemon=True, name="qwenchat-remote-feed").start()

    def open(self) -> bool:
        """Wait for the server's answer; False when cancelled first (or nothing was sent)."""
        kind, value = self._next()
        if kind == "open":
            self.response = getattr(value, "response", None)
            return True
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._next()
            if kind != "event":
                return
            yield value

    def close(self) -> None:
        self.stop.set()

    def _next(self) -> tuple[str, Any]:
        """The reader's next message; ("end", None) after the end, a cancel or an error raised."""
        while not self._ended:
            if self.cancel.is_set():
                self.cancelled = True
                break
            try:
                kind, value = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "error":
                self._ended = True
                raise value
            self._ended = kind == "end"
            return kind, value
        self._ended = True
        self.stop.set()
        return "end", None

    def _read(self, open_: Callable[[threading.Event], Any]) -> None:
        try:
            events = open_(self.stop)
            if events is None:  # stopped while waiting to retry
                self._queue.put(("end", None))
                return
            try:
                self._queue.put(("open", events))
                for event in events:
                    if self.stop.is_set():
                        break
                    self._queue.put(("event", event))
            finally:
                events.close()
            self._queue.put(("end", None))
        except BaseException as e:  # handed to the consumer, which raises it
            self._queue.put(("error", e))
