"""The terminal chat app (Textual). `run_app(...)` starts it; `QwenchatApp` takes a session
factory so tests drive it with a scripted fake. Nothing here imports torch."""

from __future__ import annotations

import os
import sys
from typing import Any


def run_app(session_factory: Any, **kwargs: Any) -> None:
    from qwenchat.tui.app import QwenchatApp

    app = QwenchatApp(session_factory, **kwargs)
    app.run()
    if app.loading:
        # Quit while a model was still loading (or downloading): the terminal is restored and
        # the store closed; end now instead of waiting for the load, printing nothing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(app.return_code or 0)
