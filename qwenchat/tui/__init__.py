"""The terminal chat app (Textual). `run_app(...)` starts it; `QwenchatApp` takes a session
factory so tests drive it with a scripted fake. Nothing here imports torch."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Any

TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
# After SIGTERM or SIGHUP the app has this long to quit before the process ends anyway. A closed
# terminal (SIGHUP) left Textual's shutdown blocked for good on writes to the gone terminal, and a
# 1 GB process behind (found in tmux). What a reply had is in the store already (saved as it
# grows; a reply whose process is gone reads as interrupted).
QUIT_GRACE_S = 5.0


def run_app(session_factory: Any, **kwargs: Any) -> None:
    need_a_terminal()
    from qwenchat.tui.app import QwenchatApp

    app = QwenchatApp(session_factory, **kwargs)
    caught: list[Any] = []
    previous = _quit_on_termination(app, caught)
    try:
        app.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    signum = caught[0] if caught else None
    if app.loading:
        # Quit while a model was still loading (or downloading): the terminal is restored and
        # the store closed; end now instead of waiting for the load, printing nothing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum if signum else app.return_code or 0)
    if signum is not None:
        signal.raise_signal(signum)  # now the caller's handler: `qwenchat` exits 128 + signum
    if app.return_code:  # the app crashed (Textual printed why): the shell must see a failure
        raise SystemExit(app.return_code)


def need_a_terminal() -> None:
    """The app draws on the terminal and reads its keys: with its input or output redirected it
    drew escape codes into a file and spun a core, never ending (found by running it in a script)."""
    from qwenchat.errors import UsageError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the chat app needs a terminal, and its input or output is redirected",
                         'run qwenchat in a terminal; for pipes and scripts use qwenchat ask "..."')


def _end_now(signum: int) -> None:
    """The app did not quit within QUIT_GRACE_S of the signal: end the process as it asked."""
    os._exit(128 + signum)


def _quit_on_termination(app: Any, caught: list[Any]) -> dict[int, Any]:
    """SIGTERM and SIGHUP quit the app as Ctrl+Q does (a streaming reply is stopped and saved
    as interrupted, the terminal restored); the signal is raised again once the app is gone."""

    def handler(signum: int, frame: Any) -> None:
        if caught:
            return
        caught.append(signum)
        watchdog = threading.Timer(QUIT_GRACE_S, _end_now, (signum,))
        watchdog.daemon = True
        watchdog.start()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not running yet or any more: the re-raise after run() ends it
            return
        # a signal handler may interrupt the loop mid-step: hand the quit to the loop itself
        loop.call_soon_threadsafe(lambda: caught.append(asyncio.ensure_future(app.run_action("quit"))))

    previous = {}
    for signum in TERMINATING:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup: stay ignored
            try:
                previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread (an embedding): leave signals alone
                break
    return previous
