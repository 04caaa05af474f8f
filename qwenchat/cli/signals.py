"""How a command ends early: Ctrl+C, SIGTERM, SIGHUP, or a reader that closed stdout.

SIGTERM and SIGHUP are raised in the main thread as `Terminated`, a KeyboardInterrupt, so they
take Ctrl+C's path: a streaming reply is saved as interrupted, stores are closed, and the
process exits 128 + the signal's number (130, 143, 129). A signal whose disposition the
parent set to "ignore" (`nohup`) stays ignored.

typer turns a KeyboardInterrupt into a silent exit 130 and a closed pipe into exit 1, before
qwenchat's own handler sees them; `Stopped` and `OutputClosed` carry them past typer instead.

A signal's exception is raised wherever the main thread is, and Python drops one raised inside
a weakref callback or `__del__` ("Exception ignored in ..."): Ctrl+C during `import torch` was
lost that way about one time in three, and the reply ran to its end (after Python's "Exception
ignored" traceback). So every handled signal is also noted, `check()`, called where a command
commits to its long work, raises it again, and the dropped exception is not printed.

While a reply streams (`cancelling`), the first signal does not raise: it stops the reply within a
token, so the reply ends as a cancelled one, with its token counts and timings (`ask -u` prints
them), and is saved from there; `check()` then raises the signal as above. A second signal raises
at once (an engine that does not stop, a server that hangs).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qwenchat import early_signals

HANDLED = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
NOTES = {signal.SIGINT: early_signals.NOTE, getattr(signal, "SIGTERM", -1): "terminated",
         getattr(signal, "SIGHUP", -2): "hung up"}


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread was, like Ctrl+C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Stopped(Exception):
    """A command ended by a signal (Ctrl+C, SIGTERM, SIGHUP): exit 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
        self.note = NOTES.get(signum, f"stopped by signal {signum}")


class OutputClosed(Exception):
    """The reader of stdout went away (`| head -1`): exit 141, quietly."""


def stopped(err: KeyboardInterrupt) -> Stopped:
    return Stopped(getattr(err, "signum", signal.SIGINT))


@contextmanager
def raise_on_termination(then_leave: bool = False) -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise `Terminated` in the main thread. `then_leave`: the
    process ends after the block, and a signal from then on exits at once (`leave_on_signals`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _noted
    _noted = None
    previous: dict[int, Any] = {}
    for signum in HANDLED:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # nohup and friends: the parent asked us to carry on
        previous[signum] = signal.signal(signum, _raise)
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, early_signals.starting):
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupt)
    hook = sys.unraisablehook
    sys.unraisablehook = lambda dropped: None if isinstance(dropped.exc_value, KeyboardInterrupt) else hook(dropped)
    try:
        yield
    finally:
        if then_leave:
            leave_on_signals()
        else:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        sys.unraisablehook = hook


_noted: int | None = None  # the signal handled last, in case its exception was dropped


@contextmanager
def cancelling(cancel: Callable[[], None]) -> Iterator[None]:
    """While inside, the first Ctrl+C, SIGTERM or SIGHUP calls `cancel` instead of raising (where
    `raise_on_termination` made them raise); after the block, `check()` raises it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    got: list[int] = []

    def soft(signum: int, frame: Any) -> None:
        got.append(signum)
        for other, handler in previous.items():  # the next one raises
            signal.signal(other, handler)
        cancel()

    for signum in (signal.SIGINT, *HANDLED):
        if signal.getsignal(signum) in (_interrupt, _raise):
            previous[signum] = signal.signal(signum, soft)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if got:
            global _noted
            _noted = got[0]


def leave_on_signals() -> None:
    """From here to the process's end, Ctrl+C, SIGTERM or SIGHUP exit at once (128 + its number),
    without a traceback: a second Ctrl+C while the first one's stop is reported, or one during
    the interpreter's teardown (torch's atexit finalizers printed "Exception ignored ..."). For
    the console script's last moments only: everything is saved and reported by then."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, *HANDLED):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _leave)


def _leave(signum: int, frame: Any) -> None:
    try:
        sys.stdout.flush()
    except Exception:  # a closed pipe, or a flush that this signal interrupted
        pass
    os._exit(128 + signum)


def check() -> None:
    """Raise again a signal whose exception Python may have dropped (see the module's docstring)."""
    if _noted is not None:
        raise KeyboardInterrupt() if _noted == signal.SIGINT else Terminated(_noted)


def _interrupt(signum: int, frame: Any) -> None:
    global _noted
    _noted = signum
    raise KeyboardInterrupt()


def _raise(signum: int, frame: Any) -> None:
    global _noted
    _noted = signum
    for other in HANDLED:  # a second signal must not cut short the saving the first one started
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)
