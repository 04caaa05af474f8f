"""F1: every key binding of the app, the message box and a focused message."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label

EXTRA_KEYS = [
    ("Message box", "enter", "Send the message"),
    ("Message box", "ctrl+j,shift+enter", "Insert a new line"),
    ("Message box", "pageup,pagedown", "Scroll the chat"),
    ("Message box", "ctrl+home,ctrl+end", "Top / bottom of the chat (Home / End when the box is empty)"),
    ("Focused message", "f8", "Copy the message"),
    ("Focused message", "f9", "Copy one of its code blocks"),
    ("Focused message", "ctrl+g", "Edit (your message, or the one a reply answers) and resend"),
    ("Focused message", "up,down", "Previous / next message"),
    ("Anywhere", "alt+up,alt+down", "Previous / next message"),
    ("Anywhere", "escape", "Stop the reply, or a message's wait; else to the message box"),
    ("Anywhere", "ctrl+c", "Stop the reply; else copy the selection (Ctrl+Q quits)"),
    ("Anywhere", "ctrl+p", "Command palette: every action, themes"),
    ("Anywhere", "tab,shift+tab", "Move focus"),
]


KEY_NAMES = {"escape": "Esc", "delete": "Del", "pageup": "PgUp", "pagedown": "PgDn", "left": "←", "right": "→"}


def key_label(key: str) -> str:
    """ "ctrl+home,shift+enter" -> "Ctrl+Home / Shift+Enter": one spelling for every key."""
    def one(k: str) -> str:
        return "+".join(KEY_NAMES.get(part, part.upper() if len(part) == 1 or re.fullmatch(r"f\d+", part)
                                      else part.capitalize()) for part in k.strip().split("+"))
    return " / ".join(one(k) for k in key.split(","))


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 72; max-width: 100%; height: 90%; border: thick $primary; background: $surface; padding: 0 1; }
    HelpScreen .title { text-style: bold; padding: 1 0; }
    HelpScreen .group { text-style: bold; padding: 1 0 0 0; }
    HelpScreen .group.first { padding: 0; }
    HelpScreen .row { height: auto; padding-left: 2; }
    HelpScreen .key { width: 23; text-style: bold; color: $accent; }
    HelpScreen .what { width: 1fr; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = [("Application", key, desc) for key, desc in bindings] + EXTRA_KEYS

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Keys (Esc closes)", classes="title")
            with VerticalScroll():
                group = None
                for where, key, desc in self.rows:
                    if where != group:
                        yield Label(where, classes="group" if group else "group first", markup=False)
                        group = where
                    # a description that wraps stays in its column, clear of the keys
                    with Horizontal(classes="row"):
                        yield Label(key_label(key), classes="key", markup=False)
                        yield Label(desc, classes="what", markup=False)
