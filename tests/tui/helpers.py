"""Shared steps for Pilot tests of the app: the real ChatSession over a scripted FakeEngine."""

from __future__ import annotations

from typing import Any

from qwenchat.tui.app import QwenchatApp
from tests.fake_engine import engine_factory
from tests.tui.conftest import wait_for

SIZE = (110, 34)


def make_app(theme: str = "qwenchat-dark", app_kwargs: dict | None = None, **engine: Any):
    factory = engine_factory(**engine)
    return QwenchatApp(factory, theme=theme, persist_theme=False, **(app_kwargs or {})), factory


async def ready(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.session is not None)


async def send(pilot, text: str) -> None:
    chat = pilot.app.chat
    chat.input.text = text
    chat.input.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not chat.generating)


def texts(app) -> list[tuple[str, str, str]]:
    return [(v.role, v.text, v.status) for v in app.chat.chatlog.views]


def notes(app) -> list[str]:
    return [(n.title + ": " if n.title else "") + n.message for n in app._notifications]


def status_text(app) -> str:
    return str(app.query_one("#status").render())


async def burst(pilot, keys: str) -> None:
    """Deliver `keys`, as a terminal sends them ("\\x7f" is Backspace, "\\x1b[D" Left), in one read:
    every key is queued before the app handles the first, as from a fast typist, a paste of
    keystrokes or a laggy SSH link. (`pilot.press` waits for each key to be handled, which hides
    any disorder.) The driver's own parser and hand-off, as the Linux driver uses them."""
    from textual._xterm_parser import XTermParser

    driver = pilot.app._driver
    for event in XTermParser().feed(keys):
        driver.process_message(event)
    await pilot.pause()


async def open_sampling(pilot):
    """Ctrl+S: the sampling settings dialog (SettingsScreen), once it is up."""
    from qwenchat.tui.screens.settings import SettingsScreen

    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen))
    return pilot.app.screen


async def open_system_prompt(pilot):
    """F4: the system prompt editor (SystemPromptScreen), once it is up."""
    from qwenchat.tui.screens.system_prompt import SystemPromptScreen

    await pilot.press("f4")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SystemPromptScreen))
    return pilot.app.screen


async def open_rename(pilot) -> int:
    """A conversation of one exchange, then F2: its rename dialog (TextPrompt) is up. Its id."""
    from qwenchat.tui.screens.dialogs import TextPrompt

    await ready(pilot)
    await send(pilot, "to be renamed")
    cid = pilot.app.session.conversation_id
    await pilot.press("f2")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, TextPrompt))
    return cid
