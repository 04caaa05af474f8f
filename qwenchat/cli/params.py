"""What every command's parameters share, attached by parameter name in one place.

- Value checks: an option or argument named like a setting (`--temperature`, `--device`,
  `--max-input`, ...) is checked by that setting's rule in `qwenchat.config` while the command
  line is parsed, so a bad value is a usage error (exit 2) naming the option, in every command
  that takes it.
- Shell completion: `-m/--model` and MODEL complete aliases, downloaded and imported models;
  `--cid` and conversation ids complete ids with titles; `--preset` and preset names complete
  presets; `config` keys complete setting names.

`command()` builds the click command from the typer app and attaches both; it imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from qwenchat import config
from qwenchat.cli import complete
from qwenchat.errors import ConfigError
from qwenchat.fit import CUTS

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.shell_completion import CompletionItem
except ImportError:  # pragma: no cover - older typer on click
    from click.shell_completion import CompletionItem

Completer = Callable[[str], list[complete.Item]]

BY_NAME: dict[str, Completer] = {
    "model": complete.models,
    "cid": complete.conversations,
    "conversation_id": complete.conversations,
    "preset": complete.presets,
    "key": complete.setting_keys,
    "dtype": complete.choices(*config.DTYPES),
    "device": complete.choices("auto", "cpu", "cuda", "mps"),
    "quantize": complete.choices(*config.QUANTIZE_MODES),
    "truncate": complete.choices(*CUTS),
}
# (group, parameter) where the name alone does not say what it holds
IN_GROUP: dict[tuple[str, str], Completer] = {
    ("preset", "name"): complete.presets,
    ("preset", "old"): complete.presets,
}


def command(app: typer.Typer) -> Any:
    """The click command of `app`, every parameter checked and completed by its name."""
    root = typer.main.get_command(app)
    _attach(root, "", "")
    return root


def _attach(cmd: Any, name: str, group: str) -> None:
    """Attach to `cmd` (called `name`, inside the group called `group`) and its subcommands."""
    for param in cmd.params:
        if param.name in config.KEYS and param.callback is None and not getattr(param, "is_flag", False):
            param.callback = _checker(param.name)
            param.process_value = _explained(param.process_value, param.callback)
        completer = IN_GROUP.get((group, param.name)) or BY_NAME.get(param.name)
        if completer is not None:
            # click's hook for a parameter's own completion (what `shell_complete=` sets)
            param._custom_shell_complete = _completion(completer)
    for sub_name, sub in getattr(cmd, "commands", {}).items():
        _attach(sub, sub_name, name)


def _explained(process: Callable[[Any, Any], Any], check: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """`process` (the option's own parsing, then `check`), where a value that does not even parse
    as the option's type is refused by the setting's rule, which names the value and the range
    (typer said "Input should be a valid number, unable to parse string as a number")."""
    def process_value(ctx: Any, value: Any) -> Any:
        try:
            return process(ctx, value)
        except typer.BadParameter as e:
            if isinstance(value, str) and e.param is not None:
                check(ctx, e.param, value)  # raises the setting's own message
            raise

    return process_value


def _checker(key: str) -> Callable[[Any, Any, Any], Any]:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        if value is None or getattr(ctx, "resilient_parsing", False):
            return value
        try:
            return config.parse_value(key, value, source=f"option {param.opts[0] if param.opts else key}")
        except ConfigError as e:
            raise typer.BadParameter(f"{value!r}: {e.hint or e.message}", ctx=ctx, param=param) from None

    return check


def _completion(completer: Completer) -> Callable[[Any, Any, str], list[Any]]:
    def run(ctx: Any, param: Any, incomplete: str) -> list[Any]:
        return [CompletionItem(value, help=help_ or None) for value, help_ in completer(incomplete)]

    return run
