"""What a user sees: the app's screen as lines of text (trailing spaces cut)."""

from __future__ import annotations

from typing import Any


def screen_lines(app: Any) -> list[str]:
    update = app.screen._compositor.render_full_update()
    return ["".join(strip.text for strip in line).rstrip() for line in update.strips]


def screen_text(app: Any) -> str:
    return "\n".join(screen_lines(app))
