"""The typer application object and the error reporting every command shares.

Command modules register themselves on `app`; `qwenchat.cli.main` runs it. Nothing here
imports torch, so `qwenchat --help` stays fast, and the top-level options and `ask`'s are
converted without pydantic (see `use_plain_values`), so a cold `ask` does not import it.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

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


def use_plain_values(params: list) -> None:
    """Convert the text, whole-number and number values (or lists of them) of `params` here:
    typer 0.2x converts every value through a pydantic adapter it builds on first use, and
    importing pydantic for that is about 0.1 s of each `qwenchat ask` start. A typer without those
    lazily built converters (no `_runtime_param`) keeps converting as it always did."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            continue
        annotation = descriptor.annotation
        many = getattr(annotation, "__origin__", None) is list
        kind = annotation.__args__[0] if many else annotation
        if kind in PlainValue.NAMES:
            param._runtime_param = PlainValue(kind, many)


class PlainValuesCommand(TyperCommand):
    """A command whose values `use_plain_values` converts (`ask`: the cold-start path)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_plain_values(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help(super().get_help_option(ctx))


class PlainValuesGroup(TyperGroup):
    """The top-level command (its options are the TUI's, parsed before any subcommand's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_plain_values(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help(super().get_help_option(ctx))


def _plain_help(option: Any) -> Any:
    # -h/--help is made apart from the other parameters, and its (unset) value is converted too
    if option is not None:
        use_plain_values([option])
    return option


class PlainValue:
    """typer's per-parameter converter contract (`coerce`) for str, int, float and bool values."""

    NAMES = {str: "text", int: "integer", float: "number", bool: "boolean"}
    BOOLS = {"1": True, "true": True, "yes": True, "y": True, "on": True,
             "0": False, "false": False, "no": False, "n": False, "off": False}  # fmt: skip

    def __init__(self, kind: type, many: bool) -> None:
        self.kind, self.many = kind, many

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if self.many else None
        if self.many:  # the parser gives a tuple of the values of a repeated option
            return [self._one(v, param, ctx) for v in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, self.kind):
            return value
        try:
            if self.kind is bool:
                return self.BOOLS[str(value).strip().lower()]
            return self.kind(value)
        except (KeyError, TypeError, ValueError):
            name = self.NAMES[self.kind]
            raise typer.BadParameter(f"{value!r} is not a valid {name}.", ctx=ctx, param=param) from None


app = typer.Typer(
    cls=PlainValuesGroup,
    name="qwenchat",
    help="Chat with a local Qwen2/Qwen2.5 model: a terminal app, and `ask` for pipes and scripts.",
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
