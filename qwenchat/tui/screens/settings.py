"""The sampling panel: temperature, top-p, top-k, min-p, repetition penalty, max tokens, seed,
and JSON output (structured output: off, any JSON object, or a schema; qwenchat/structured.py).

Each field shows the model's default as its placeholder (empty = use the default). Values are
checked as they are typed with the same rules as the config file; an invalid one is flagged
under its field and Save stays refused, so it never reaches the engine. The screen returns a
dict of option values (None = default) for `ChatSession.set_options`.

For a remote model (`server` given) every field is sent to the server as its API field, and an
empty one leaves the value to the server: no local default is shown as if it applied there.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from qwenchat.config import parse_value
from qwenchat.errors import ConfigError, QwenchatError
from qwenchat.structured import from_text, to_text
from qwenchat.tui.widgets.text_fields import LineInput

# option field -> (label, config key used for validation)
FIELDS: dict[str, tuple[str, str]] = {
    "temperature": ("Temperature", "temperature"),
    "top_p": ("Top-p", "top_p"),
    "top_k": ("Top-k", "top_k"),
    "min_p": ("Min-p", "min_p"),
    "repetition_penalty": ("Repetition penalty", "repetition_penalty"),
    "max_new_tokens": ("Max tokens", "max_tokens"),
    "seed": ("Seed", "seed"),
    "constraint": ("JSON output", "constraint"),  # structured output; not a config key (see check)
}
CONSTRAINT_HINT = "off; json, a JSON schema, or 'name, age int'"


def check(field: str, text: str) -> tuple[Any, str | None]:
    """(value, None) for a valid entry (None when empty), or (None, the problem)."""
    text = text.strip()
    if not text:
        return None, None
    if field == "constraint":
        try:
            return from_text(text), None
        except QwenchatError as e:
            return None, e.message
    label, key = FIELDS[field]
    try:  # said as the field is labelled ("Max tokens must be ...", not max_tokens)
        return parse_value(key, text, source="settings", name=label), None
    except ConfigError as e:
        return None, e.hint or e.message


def _text(name: str, value: Any) -> str:
    if name == "constraint":
        return to_text(value)
    return "" if value is None else str(value)


def _placeholder(name: str, default: Any, remote: bool = False) -> str:
    if name == "constraint":
        return CONSTRAINT_HINT if default is None else f"default: {to_text(default)}"
    if default is None and remote:
        return "the server's default"
    return f"default: {'random' if default is None and name == 'seed' else default}"


def intro(server: str | None) -> str:
    if server is None:
        return "Empty fields use the model's default, shown in grey. Ctrl+S saves."
    from qwenchat.remote.reference import RemoteRef

    return (f"Sent to the server at {RemoteRef.parse(server).host}; empty fields leave it to the server. "
            "A setting it refuses is left out, and you are told. Ctrl+S saves.")


class SettingsScreen(ModalScreen[dict | None]):
    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > Vertical { width: 76; max-width: 100%; height: auto; max-height: 100%; overflow-y: auto; border: thick $primary; background: $surface; padding: 1 2; }
    SettingsScreen .title { text-style: bold; }
    SettingsScreen .note { color: $text-muted; margin-bottom: 1; width: 100%; }
    SettingsScreen Grid { grid-size: 2; grid-columns: 22 1fr; grid-rows: auto; grid-gutter: 1 0; height: auto; }
    SettingsScreen Grid > Label { padding: 0; height: 1; }
    SettingsScreen Input.-invalid { background: $error 30%; }
    SettingsScreen .error { color: $text-error; height: auto; column-span: 2; display: none; }
    SettingsScreen .error.-shown { display: block; }
    SettingsScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    SettingsScreen Button { margin-left: 1; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, current: dict[str, Any], defaults: dict[str, Any], server: str | None = None) -> None:
        super().__init__()
        self.current, self.defaults, self.server = current, defaults, server

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Sampling settings (this conversation)", classes="title")
            yield Label(intro(self.server), classes="note", markup=False)
            with Grid():
                for name, (label, _) in FIELDS.items():
                    yield Label(label)
                    value = self.current.get(name)
                    default = self.defaults.get(name)
                    yield LineInput(_text(name, value), id=name, compact=True,
                                placeholder=_placeholder(name, default, self.server is not None))
                    yield Label("", id=f"{name}-error", classes="error", markup=False)  # may quote the input
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    @on(Input.Changed)
    def _validate(self, event: Input.Changed) -> None:
        self._check_one(event.input)

    def _check_one(self, field: Input) -> bool:
        _, problem = check(field.id, field.value)
        field.set_class(problem is not None, "-invalid")
        error = self.query_one(f"#{field.id}-error", Label)
        error.update(f"✗ {problem}" if problem else "")
        error.set_class(problem is not None, "-shown")
        return problem is None

    def values(self) -> dict[str, Any] | None:
        """The entered values, or None while any is invalid."""
        out, ok = {}, True
        for field in self.query(Input):
            ok = self._check_one(field) and ok
            out[field.id] = check(field.id, field.value)[0]
        return out if ok else None

    def action_save(self) -> None:
        values = self.values()
        if values is None:
            self.notify("Fix the flagged settings first", severity="error")
            return
        self.dismiss(values)

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
