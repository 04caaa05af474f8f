"""The app's shape: no method shadows a private name of Textual's own classes (QwenchatApp._flush
once replaced App._flush, and every quit ended in a TypeError traceback), and nothing in tui/
reaches into `session.engine` (the session exposes what the app shows)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from textual.app import App
from textual.screen import Screen

import qwenchat.tui
from qwenchat.tui.app import QwenchatApp
from qwenchat.tui.screens.chat import ChatScreen

ALLOWED = {"__init__", "_on_key"}  # deliberate overrides of Textual's hooks


def shadowed(cls: type, base: type) -> list[str]:
    """Private names of `base` that methods or properties written in qwenchat replace."""
    own = {name for klass in cls.__mro__ if klass.__module__.startswith(("qwenchat", __name__))
           for name, value in vars(klass).items()
           if inspect.isfunction(value) or isinstance(value, property)}
    return sorted(n for n in own if n.startswith("_") and not n.startswith("__") and hasattr(base, n)
                  and n not in ALLOWED)


def test_no_private_textual_name_is_shadowed():
    assert shadowed(QwenchatApp, App) == []
    assert shadowed(ChatScreen, Screen) == []


def test_shadow_check_would_catch_the_flush_bug():
    class Broken(QwenchatApp):
        async def _flush(self) -> None: ...

    assert shadowed(Broken, App) == ["_flush"]


def test_tui_never_reads_session_engine():
    root = Path(qwenchat.tui.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "engine":
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
