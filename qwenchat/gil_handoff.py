"""`GilHandoff`: while a reply streams beside a renderer (the chat app's screen, `ask`'s live
Markdown), the engine thread must not wait milliseconds for the GIL after each native call.
Stdlib only; shared by the faces."""

from __future__ import annotations

import sys

# Seconds a thread waits for the GIL before the holder must hand it over, while a reply streams
# (Python's default is 0.005).
STREAMING_SWITCH_INTERVAL = 0.0002


class GilHandoff:
    """While a reply streams, the GIL changes hands every STREAMING_SWITCH_INTERVAL seconds
    instead of every 5 ms; `stop` puts the previous interval back.

    Why: the engine thread drops the GIL for each native call (the decode step, every torch op
    of sampling: a dozen or more a token) and must take it back after each. While the UI thread
    renders the reply (pure Python, tens of milliseconds a frame), each of those waits lasted up
    to the whole interval, so the engine idled for milliseconds per token behind the renderer.
    Measured on a shared 2-core machine with a stand-in engine (one large product and 13 small
    torch ops a token) beside the app: 1.2 tok/s with 5 ms, 2.8 tok/s with 0.2 ms. The cost is
    more frequent hand-overs while both threads run Python, a small share of a token's time."""

    def __init__(self) -> None:
        self._saved: float | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def start(self) -> None:
        if self._saved is None:
            self._saved = sys.getswitchinterval()
            sys.setswitchinterval(STREAMING_SWITCH_INTERVAL)

    def stop(self) -> None:
        if self._saved is not None:
            sys.setswitchinterval(self._saved)
            self._saved = None
