"""Waiting for another window's reply at the end of a shared conversation.

A message sent while another process (`qwenchat ask -c`, another app) is answering at the end of
the same conversation would follow a reply that is not there yet: one reply would answer two
questions and the other would land on a branch. So the faces wait until that reply has ended,
then send. `ask` polls in a loop, the app on a timer; both use `OtherWindowWait`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwenchat.session import ChatSession
    from qwenchat.session_records import Entry

POLL_S = 0.25  # how often a waiting message looks again
STUCK_S = 120.0  # how long nothing may change there before the message is sent anyway


class OtherWindowWait:
    """`busy()` says whether to keep waiting. It gives up (`stuck` set) when nothing has changed
    at the end of the conversation for STUCK_S: a writer that hangs, or a process id reused by
    another program, must not hold a message back for good."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.stuck = False
        self._seen: tuple | None = None
        self._since = time.monotonic()

    def busy(self) -> Entry | None:
        """The message another window is answering at the end of the conversation, while it is
        and has not stalled; None when the message may go."""
        entry = self.session.answered_elsewhere()
        if entry is None:
            return None
        state = (entry.id, len(entry.content), entry.status)
        if state != self._seen:
            self._seen, self._since = state, time.monotonic()
        elif time.monotonic() - self._since > STUCK_S:
            self.stuck = True
            return None
        return entry
