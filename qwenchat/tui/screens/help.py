"""F1: every key binding of the app, the message box and a focused message."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

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


def key_label(key: str) -> str:
    out = []
    for k in key.split(","):
        k = k.strip().replace("ctrl+", "Ctrl+").replace("shift+", "Shift+").replace("alt+", "Alt+")
        k = {"escape": "Esc", "enter": "Enter", "delete": "Del", "pageup": "PgUp", "pagedown": "PgDn"}.get(k, k)
        if re.fullmatch(r"f\d+", k):
            k = k.upper()
        out.append(k)
    return " / ".join(out)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 72; max-width: 100%; height: 90%; border: thick $primary; background: $surface; padding: 0 1; }
    HelpScreen .title { text-style: bold; padding: 1 0; }
    HelpScreen Static { width: 1fr; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = [("Application", key, desc) for key, desc in bindings] + EXTRA_KEYS

    def compose(self) -> ComposeResult:
        lines, group = [], None
        for where, key, desc in self.rows:
            if where != group:
                lines.append(f"\n[b]{where}[/b]" if lines else f"[b]{where}[/b]")
                group = where
            lines.append(f"  [b $accent]{key_label(key):<22}[/] {desc}")
        with Vertical():
            yield Label("Keys (Esc closes)", classes="title")
            with VerticalScroll():
                yield Static("\n".join(lines))
