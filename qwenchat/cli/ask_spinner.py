"""`spinner`: one line on stderr saying what `ask` is busy with while nothing else shows
(the model loading, a JSON reply that stdout prints only once it is complete).

Only while stderr is a terminal: in a pipe or a log file (`ask ... 2>log`, CI) nothing is
written. The line is rich's transient status, erased when the block ends however it ends (the
work done, an error, Ctrl+C), so nothing of it is left before what is printed next. Keys typed
meanwhile are not echoed (cli/quiet_keys.py; they reach the shell afterwards): an Enter pressed
at a screen that looked stuck moved the cursor off the line, and each such frame stayed behind
(found in tmux).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from qwenchat.cli.quiet_keys import quiet_keys

Say = Callable[[str], None]  # changes the text beside the spinner


@contextmanager
def spinner(what: str, when: bool = True) -> Iterator[Say]:
    """`what` beside a spinner on stderr while the block runs (if `when` and stderr is a
    terminal). The block may call the yielded function as often as it likes: the text is only
    stored, and drawn at the spinner's next frame by rich's own thread (12.5 a second)."""
    if not when or not sys.stderr.isatty():
        yield _say_nothing
        return
    from rich.console import Console

    with quiet_keys(sys.stderr), Console(stderr=True).status(what) as status:
        yield status.update


def _say_nothing(_text: str) -> None:
    pass
