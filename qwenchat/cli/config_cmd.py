"""`qwenchat config path|show|get|set|unset`: the TOML settings file from the shell.

`show` prints valid TOML: each effective value with where it comes from (the file or an
environment variable) as a comment. `set` validates before writing, so the file never holds a
value qwenchat would refuse at start-up. Imports no torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from qwenchat import config
from qwenchat.cli.app import app
from qwenchat.errors import UsageError, ValueRefused

config_app = typer.Typer(help="Show and change settings (the config file).", no_args_is_help=True)
app.add_typer(config_app, name="config")


@contextmanager
def _typed() -> Iterator[None]:
    """A key or value typed on the command line that is refused is a usage error (exit status 2,
    as the same value given to `ask` as a flag); trouble with the file itself stays exit 1."""
    try:
        yield
    except ValueRefused as e:
        raise UsageError(e.message, e.hint) from None


def _path():
    from qwenchat.paths import config_file

    return config_file()


@config_app.command("path")
def path() -> None:
    """Print where the config file lives (it may not exist yet)."""
    typer.echo(str(_path()))


@config_app.command("show")
def show() -> None:
    """Print the effective settings (file < environment), with where each comes from."""
    p = _path()
    raw, env = config.read_raw(p), config.read_env()
    typer.echo(f"# {p}{'' if p.exists() else ' (not created yet)'}")
    for key in config.KEYS:
        if key in env:
            typer.echo(f"{key} = {config.toml_value(config.shown(key, env[key]))}  # environment {config.ENV_VARS[key]}")
        elif key in raw:
            typer.echo(_file_line(key, raw[key], p))
        else:
            typer.echo(f"# {key} is not set (default)")
    for key in raw.keys() - set(config.KEYS):
        typer.echo(f"# {key} in the config file is not a setting: {config.repair_hint(key)}")


def _file_line(key: str, value: object, p) -> str:
    """A config-file value as `show` prints it: a bad one says so (it stops every start) and how
    to fix it, where it used to stop `show` itself."""
    try:
        value = config.parse_value(key, value, source=f"in {p}")
    except config.ConfigError as e:
        return f"{key} = {config.toml_value(value)}  # config file: INVALID, {e.hint}; {config.repair_hint(key)}"
    return f"{key} = {config.toml_value(config.shown(key, value))}  # config file"


@config_app.command("list", hidden=True)
def list_() -> None:
    """`config show` by the name other tools use (`git config --list`, `npm config list`)."""
    show()


@config_app.command("get")
def get(key: Annotated[str, typer.Argument(metavar="KEY")]) -> None:
    """Print one effective value (empty output and exit status 1 when unset)."""
    with _typed():
        key = config.check_key(key, "config get")
    found = config.sources(path=_path())
    if key not in found:
        sys.stderr.write(f"{key} is not set\n")
        raise typer.Exit(1)
    typer.echo(str(config.shown(key, found[key][0])))


@config_app.command("set")
def set_(
    key: Annotated[str, typer.Argument(metavar="KEY")],
    value: Annotated[str, typer.Argument(metavar="VALUE")],
) -> None:
    """Validate VALUE and store it under KEY in the config file."""
    if key == "theme":
        _check_theme(value.strip())
    if key == "model":
        value = _checked_model(value.strip())
    with _typed():
        stored = config.set_value(key, value, path=_path())
    sys.stderr.write(f"{key} = {config.toml_value(config.shown(key, stored))}  (in {_path()})\n")
    var = config.ENV_VARS.get(key)
    if var and config.read_env().get(key) is not None:
        sys.stderr.write(f"note: {var} is set in the environment and overrides this value\n")


def _checked_model(name: str) -> str:
    """`name` if it means a model (an alias, a Hub repo id, a model folder, a .gguf file, an
    imported GGUF or a server's URL), a relative path made absolute (it is read from any folder
    later), or a UsageError saying why not: every later `ask` and app start would fail on it
    ("unknown model ..."). Nothing is downloaded or loaded here."""
    from qwenchat.errors import QwenchatError
    from qwenchat.models import check_name, name_kind
    from qwenchat.remote.reference import is_remote

    if not name or is_remote(name):
        return name
    try:
        check_name(name)
    except QwenchatError as e:
        raise UsageError(e.message, e.hint) from None
    if name_kind(name) in ("local", "gguf"):
        # one spelling per folder: "coder/" and "coder" were two models in the picker
        return name.rstrip("/") if name.startswith("~") else os.path.abspath(name)
    return name


def _check_theme(name: str) -> None:
    """A theme the app knows (Textual's, qwenchat's and the user's theme files), or a UsageError
    listing them: the app would only warn at start-up and fall back to its default."""
    import difflib

    from textual.theme import BUILTIN_THEMES

    from qwenchat.paths import user_themes_dir
    from qwenchat.tui.themes import load_themes

    known = sorted(set(BUILTIN_THEMES) | set(load_themes().themes))
    if name and name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(
            f"unknown theme {name!r}",
            f"{hint}the themes: {', '.join(known)} (your own go in {user_themes_dir()} as TOML files)",
        )


@config_app.command("unset")
def unset(key: Annotated[str, typer.Argument(metavar="KEY")]) -> None:
    """Remove KEY from the config file (its default applies again)."""
    with _typed():
        removed = config.unset_value(key, path=_path())
    sys.stderr.write(f"{key} {'removed' if removed else 'was not set'}\n")
