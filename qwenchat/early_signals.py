"""Ctrl+C in the first moments of the `qwenchat` command, while Python imports the CLI (typer,
rich: ~0.2 s), printed a KeyboardInterrupt traceback through the import machinery. The package's
first import installs this handler in the command itself; `cli.signals.raise_on_termination`
takes over once the command runs. Kept apart (standard library only) so it is in place before
anything slow is imported."""

from __future__ import annotations

import os
import signal
import sys

NOTE = "interrupted"


def install() -> None:
    """In the `qwenchat` command (the console script, or `python -m qwenchat`) only, not in a
    process that imports qwenchat for other work (tests, a notebook)."""
    if _is_the_command(sys.argv[0]) and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, starting)


def _is_the_command(argv0: str) -> bool:
    name, folder = os.path.basename(argv0), os.path.basename(os.path.dirname(argv0))
    return name == "qwenchat" or (name == "__main__.py" and folder == "qwenchat")


def starting(signum: int, frame: object) -> None:
    """End the process at once, with the note and status a later Ctrl+C gives (130)."""
    try:
        sys.stderr.write(f"{chr(10) if sys.stderr.isatty() else ''}{NOTE}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed terminal: the status says it
        pass
    os._exit(128 + signum)
