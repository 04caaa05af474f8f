"""Command-line entry point: `qwenchat` (the TUI) and its subcommands.

`main()` turns every error a user can act on into a message and an exit status:
0 success, 1 runtime error, 2 usage error, 130 interrupted (Ctrl+C), 143 terminated (SIGTERM),
129 hung up (SIGHUP), 141 output pipe closed (quietly).
"""

from __future__ import annotations

import os
import shlex
import sys

import typer

from qwenchat.cli.app import app, report_error
from qwenchat.cli.signals import OutputClosed, Stopped, raise_on_termination, stopped
from qwenchat.errors import in_chain

# Command modules register themselves on `app` when imported.
# (command modules are imported below this line)
from qwenchat.cli import import_cmd as _import_cmd  # noqa: E402,F401
from qwenchat.cli import chat as _chat  # noqa: E402,F401
from qwenchat.cli import models as _models  # noqa: E402,F401
from qwenchat.cli import ask as _ask  # noqa: E402,F401
from qwenchat.cli import history as _history, config_cmd as _config_cmd  # noqa: E402,F401
from qwenchat.cli import bench as _bench  # noqa: E402,F401
from qwenchat.cli import serve as _serve  # noqa: E402,F401

EXIT_BROKEN_PIPE = 141
# The usage errors typer raises (bad option, bad value, unknown command): click's, or, from typer
# 0.2x on, those of the click copy typer carries. Found through a class typer exports, so both
# work, and importing click (30 ms) is left to a typer that uses it.
CLI_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv, last=True)
    except KeyboardInterrupt as e:  # a second signal while the first one's stop was being reported
        code = stopped(e).exit_code
    sys.exit(code)


def run(argv: list[str] | None = None, *, last: bool = False) -> int:
    """`last`: the process ends after this (the console script): from the command's end on, a
    signal exits at once and quietly (`signals.leave_on_signals`)."""
    with raise_on_termination(then_leave=last):
        try:
            return _run(argv)
        except KeyboardInterrupt as e:  # one that came outside a command (typer's or ours)
            return _stopped(stopped(e))
        except Exception as e:
            # Python wraps a signal's exception raised in some places (a class body's
            # __set_name__ while typer imported pydantic gave a RuntimeError traceback for a
            # Ctrl+C in the first 0.1 s, in a fresh-clone CI run): it ends as that signal
            if (signal_raised := in_chain(e, KeyboardInterrupt)) is None:
                raise
            return _stopped(stopped(signal_raised))


def _run(argv: list[str] | None) -> int:
    from qwenchat.cli.params import command
    from qwenchat.engine.errors import EngineError
    from qwenchat.errors import QwenchatError

    try:
        rv = command(app).main(args=argv, prog_name="qwenchat", standalone_mode=False)
    except Stopped as e:
        return _stopped(e)
    except typer.Abort:  # an aborted confirmation (or end of input at one)
        return _stopped(stopped(KeyboardInterrupt()))
    except CLI_ERROR as e:
        hint = _unknown_option(e, sys.argv[1:] if argv is None else argv)
        e.show()
        if hint:
            sys.stderr.write(f"  hint: {hint}\n")
        return e.exit_code
    except QwenchatError as e:
        report_error(e)
        return e.exit_code
    except EngineError as e:
        report_error(e)
        return 1
    except (OutputClosed, BrokenPipeError):
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return rv if isinstance(rv, int) else 0


def _unknown_option(e: Exception, argv: list[str]) -> str | None:
    """For an unknown option: the command's options it begins (click suggests look-alikes:
    `--temp` got "--help, --stop, --system", not --temperature), or, for what reads as text or a
    number (`-5 plus 3?`, `config set temperature -1`), the same command with `--` before it."""
    name = getattr(e, "option_name", None)
    if type(e).__name__ != "NoSuchOption" or not name:
        return None
    ctx = getattr(e, "ctx", None)
    opts = [o for p in (ctx.command.params if ctx else []) for o in getattr(p, "opts", []) if o.startswith(name)]
    if opts and name.startswith("--"):
        e.possibilities = opts  # click prints them as "Possible options"
        return None
    if name.lstrip("-")[:1].isalpha():  # a mistyped option (`--temprature`), not text
        return None
    i = next((i for i, arg in enumerate(argv) if arg.startswith(name)), None)  # click names "-5" of "-5 plus 3?"
    if i is None:
        return None
    return f"text that starts with '-' goes after `--`: qwenchat {shlex.join(argv[:i] + ['--'] + argv[i:])}"


def _stopped(e: Stopped) -> int:
    try:
        # on a terminal the echoed ^C leaves the line unfinished; a log file starts clean
        sys.stderr.write(f"{chr(10) if sys.stderr.isatty() else ''}{e.note}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # SIGHUP: the terminal may be gone
        pass
    return e.exit_code


def _silence_stdout() -> None:
    # The reader went away (`| head -1`): point stdout at /dev/null so the interpreter's
    # final flush does not raise a second BrokenPipeError at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
