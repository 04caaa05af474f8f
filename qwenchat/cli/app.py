"""The typer application object and the error reporting every command shares.

Command modules register themselves on `app`; `qwenchat.cli.main` runs it. Nothing here
imports torch, so `qwenchat --help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from qwenchat.cli.signals import OutputClosed, stopped

if TYPE_CHECKING:
    from qwenchat.config import Settings


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


def settings_with_flags(flags: Mapping[str, Any]) -> "Settings":
    """The config file and environment with the command line's flags on top. A bad flag value
    is a usage error (exit 2); a bad value in the file or environment stays a ConfigError."""
    from qwenchat.config import load_settings
    from qwenchat.errors import ConfigError, UsageError

    settings = load_settings()
    try:
        return settings.merged(flags)
    except ConfigError as e:
        raise UsageError(e.message, e.hint) from None


class QwenchatGroup(TyperGroup):
    """typer's group, but a Ctrl+C or a closed stdout leaves it as `Stopped` or `OutputClosed`,
    so that `qwenchat.cli.run` (not typer) decides the note and the exit status."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise stopped(e) from e
        except BrokenPipeError as e:
            raise OutputClosed() from e


app = typer.Typer(
    name="qwenchat",
    cls=QwenchatGroup,
    help="Chat with a local Qwen2/Qwen2.5 model: a terminal app, and `ask` for pipes and scripts.",
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich help gives every flag a `<bool>` type, as if it took a value
    # (and plain help needs no rich import).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
