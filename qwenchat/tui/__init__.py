"""The terminal chat app (Textual). `run_app(...)` starts it; `QwenchatApp` takes a session
factory so tests drive it with a scripted fake. Nothing here imports torch."""

from __future__ import annotations

from typing import Any


def run_app(session_factory: Any, **kwargs: Any) -> None:
    from qwenchat.tui.app import QwenchatApp

    QwenchatApp(session_factory, **kwargs).run()
