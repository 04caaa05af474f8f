"""The typer application object and the error reporting every command shares.

Command modules register themselves on `app`; `qwenchat.cli.main` runs it. Nothing here
imports torch, so `qwenchat --help` stays fast.
"""

from __future__ import annotations

import sys

import typer


def report_error(err: BaseException) -> None:
    """Print a user-facing error (message and hint) to stderr, without a traceback."""
    message = getattr(err, "message", None) or str(err)
    hint = getattr(err, "hint", None)
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"  hint: {hint}\n")
    sys.stderr.flush()


def warn(text: str) -> None:
    sys.stderr.write(f"warning: {text}\n")
    sys.stderr.flush()


app = typer.Typer(
    name="qwenchat",
    help="Chat with a local Qwen2/Qwen2.5 model: a terminal app, and `ask` for pipes and scripts.",
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
