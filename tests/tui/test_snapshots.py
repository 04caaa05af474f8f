"""Snapshot tests (pytest-textual-snapshot): the chat screen in the three shipped themes and in a
60x15 terminal, the sampling panel and help.

Deterministic: fixed terminal size, the real session over the scripted FakeEngine (fixed
timings), no cursor blink, the details line's clock fixed. Update with
`pytest tests/tui/test_snapshots.py --snapshot-update` after a deliberate change and review the SVGs."""

from __future__ import annotations

import pytest

from qwenchat.tui.app import QwenchatApp
from qwenchat.tui.screens.help import HelpScreen
from qwenchat.tui.screens.settings import SettingsScreen
from tests.fake_engine import engine_factory
from tests.tui.conftest import wait_for

SIZE = (110, 34)
REPLY = "Here is a function:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nIt returns the **sum**."
THEMES = ["qwenchat-dark", "qwenchat-light", "qwenchat-high-contrast"]


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """Message times and day groups as of a fixed moment, so the snapshots do not age."""
    import qwenchat.tui.details as details
    import qwenchat.tui.widgets.sidebar as sidebar

    monkeypatch.setattr(details, "sent_at", lambda created_at, now=None: "12:00" if created_at else "")
    monkeypatch.setattr(sidebar, "day_label", lambda stamp, today=None: "Today")


def make_app(theme: str = "qwenchat-dark") -> QwenchatApp:
    return QwenchatApp(engine_factory(script=[REPLY]), theme=theme, persist_theme=False)


async def chatted(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.session is not None)
    app.chat.input.cursor_blink = False
    app.chat.input.text = "Write an add function in Python"
    app.chat.input.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.chat.generating)
    app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("theme", THEMES)
def test_main_screen(snap_compare, theme):
    assert snap_compare(make_app(theme), terminal_size=SIZE, run_before=chatted)


def test_small_terminal(snap_compare):
    assert snap_compare(make_app(), terminal_size=(60, 15), run_before=chatted)


def test_settings_panel(snap_compare):
    async def open_settings(pilot):
        await chatted(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen))
        pilot.app.screen.query_one("#top_p").value = "2"  # flagged inline
        pilot.app.screen.query_one("#temperature").focus()
        pilot.app.screen.query_one("#temperature").cursor_blink = False
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=open_settings)


def test_help_screen(snap_compare):
    async def open_help(pilot):
        await wait_for(pilot, lambda: pilot.app.session is not None)
        pilot.app.chat.input.cursor_blink = False
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=open_help)
