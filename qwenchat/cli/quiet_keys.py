"""`quiet_keys`: while `ask` draws a reply live on a terminal, keys typed are not echoed into it.

Why: rich's live display redraws the growing reply by moving the cursor up as many lines as it
drew the last time, and the terminal echoes typed keys at the cursor. Ctrl+C's "^C" after the
reply's last line (rich pads every line to the terminal's width) wrapped onto a line of its own,
the final redraw started one line too low, and the reply's first line stayed on the screen twice
(found in tmux, every time). Keys typed meanwhile still reach whatever reads the terminal next
(the shell), as typeahead.

POSIX terminals only (termios); elsewhere, when the stream is not a terminal, or when this process
runs in the background, nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


@contextmanager
def quiet_keys(stream: TextIO) -> Iterator[None]:
    """Echo off (typed characters and control keys like ^C) on the terminal behind `stream`,
    restored on the way out, however the block ends (Ctrl+C and SIGTERM arrive as exceptions:
    cli/signals.py)."""
    try:
        import termios
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
        # a job in the background (`ask ... &`) that changed the terminal's modes would be stopped
        # by SIGTTOU: the foreground job's keys are not ours to hide then
        foreground = os.tcgetpgrp(fd) == os.getpgrp()
    except (termios.error, OSError, ValueError, AttributeError):  # not a terminal, or no descriptor
        foreground = False
    if not foreground:
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))  # the local modes
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
