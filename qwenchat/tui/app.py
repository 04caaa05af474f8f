"""The Textual chat app: themes, the store, loading the session, quitting. The chat itself (its
layout and actions) is `screens/chat.py`'s `ChatScreen`.

It talks to the model only through a `ChatSession` made by the `session_factory` it is given
(tests pass one over a fake engine), and to the `Store` for the sidebar and presets. It never
imports torch. The factory (download, load) runs in a thread worker and reports back with
messages (`tui/messages.py`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette
from textual.driver import Driver
from textual.screen import Screen

from qwenchat.tui import draft
from qwenchat.tui import messages as msg
from qwenchat.tui.errors import error_text
from qwenchat.tui.screens.chat import ChatScreen
from qwenchat.tui.screens.help import HelpScreen, key_label
from qwenchat.tui.screens.models import model_picker
from qwenchat.tui.themes import DEFAULT_THEME, load_themes
from qwenchat.tui.widgets.reply import warm_up
from qwenchat.tui.widgets.text_fields import KeysInOrder, hand_on

# (model name or None for the default, store, download progress) -> ChatSession; may be slow
SessionFactory = Callable[[str | None, Any, Any], Any]


class QwenchatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "qwenchat"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help"),
        Binding("ctrl+o", "pick_model", "Model"),
    ]

    def __init__(self, session_factory: SessionFactory, *, model: str | None = None,
                 conversation_id: int | None = None, continue_last: bool = False,
                 theme: str | None = None, persist_theme: bool = True,
                 store_factory: Callable[[], Any] | None = None, api_key: str | None = None) -> None:
        super().__init__()
        self.session_factory, self.model = session_factory, model
        self.api_key = api_key  # --api-key, for the model picker asking a server what it offers
        self.start_conversation, self.continue_last = conversation_id, continue_last
        self.requested_theme, self.persist_theme = theme, persist_theme
        self.store_factory = store_factory
        self.store: Any = None
        self.session: Any = None
        self.load_error: BaseException | None = None  # why the last load failed (None: it did not)
        self.chat = ChatScreen()
        self._loader: threading.Thread | None = None
        self._stand_in_theme: str | None = None  # the theme shown for an unknown configured one
        self._load_seq = 0

    def get_driver_class(self) -> type[Driver]:
        return clearing_on_exit(super().get_driver_class())

    def on_load(self) -> None:
        from qwenchat.store import Store

        self.store = (self.store_factory or Store.open)()

    def on_mount(self) -> None:
        self._setup_themes()

    def get_default_screen(self) -> Screen:
        return self.chat

    def _setup_themes(self) -> None:
        loaded = load_themes()
        for theme in loaded.themes.values():
            self.register_theme(theme)
        for problem in loaded.problems:
            self.notify(problem, title="Theme file skipped", severity="warning", markup=False)
        wanted = self.requested_theme
        if wanted is None:
            try:
                from qwenchat.config import load_settings

                wanted = load_settings().theme
            except Exception as e:  # ConfigError: say so, keep going
                self.notify(error_text(e)[0], title="Config", severity="warning", markup=False)
        if wanted not in self.available_themes:
            if wanted:
                self.notify(f"unknown theme {wanted!r}: using {DEFAULT_THEME} for now", severity="warning", markup=False)
            wanted = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
            self._stand_in_theme = wanted  # not the user's choice: never saved over theirs
        self.theme = wanted
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, theme: Any) -> None:
        stand_in, self._stand_in_theme = self._stand_in_theme, None
        if not self.persist_theme or theme.name == stand_in:
            return
        try:
            from qwenchat.config import set_value

            set_value("theme", theme.name)
        except Exception as e:
            self.show_error(e, "Could not save the theme")

    def show_error(self, err: BaseException, title: str = "Error") -> None:
        message, hint = error_text(err)
        self.notify(message + (f"\nFix: {hint}" if hint else ""), title=title, severity="error", timeout=10,
                    markup=False)

    # -- session loading -------------------------------------------------------------------

    def begin_loading(self, model: str | None) -> None:
        """Make a session for `model` in a thread (the chat screen calls this once it is up).

        A daemon thread, not a Textual thread worker: quitting must not wait for a download or a
        load to finish (`run_app` ends the process when one is still running)."""
        self.model = model  # what is asked for now (a failure puts back the one in use)
        self._load_seq += 1
        self.load_error = None
        self.chat.show_loading(model)
        self._loader = threading.Thread(target=self._load_session, args=(model, self._load_seq),
                                        name="qwenchat-load", daemon=True)
        self._loader.start()

    @property
    def loading(self) -> bool:
        return self._loader is not None and self._loader.is_alive()

    def _load_session(self, model: str | None, seq: int) -> None:
        try:
            session = self.session_factory(model, self.store, msg.DownloadReporter(self.chat))
        except BaseException as e:  # noqa: BLE001 - shown to the user, app keeps running
            self.post_message(msg.SessionFailed(e, model, seq))
            return
        warm_up()  # here, while the screen waits for the model anyway
        self.post_message(msg.SessionReady(session, model, seq))

    async def on_session_ready(self, event: msg.SessionReady) -> None:
        if event.seq != self._load_seq or self.chat.quitting:
            event.session.close()  # a later pick superseded this load, or the app is closing its screens
            return
        old, self.session = self.session, event.session
        try:
            await self.chat.session_loaded(old)
        except Exception:
            if self.chat.quitting:  # Ctrl+Q came while the chat was being shown: nothing to show
                return
            raise
        finally:
            if old is not None and old is not self.session:
                old.close()  # a server's connections go with the model that used them
        for note in self.session.model_info.notes:  # a damaged int8 cache rebuilt, ...
            self.notify(note, title="Model", severity="warning", timeout=10, markup=False)

    def on_session_failed(self, event: msg.SessionFailed) -> None:
        if event.seq != self._load_seq or self.chat.quitting:
            return
        self.load_error = event.error
        self.show_error(event.error, f"Could not load {event.model or 'the model'}")
        if self.session is not None:  # a pick that failed: the model in use stays, and is named so
            self.model = self.session.model_label
        self.chat.session_failed()

    # A reply's end (the chat screen's messages bubble up here): what the engine had to say
    # during it, e.g. a setting the server refused and that was left out, is shown once.
    def on_reply_done(self, event: msg.ReplyDone) -> None:
        self.show_engine_notes()

    def on_reply_failed(self, event: msg.ReplyFailed) -> None:
        self.show_engine_notes()

    def show_engine_notes(self) -> None:
        if self.session is None or self.chat.quitting:
            return
        for note in self.session.take_notes():
            self.notify(note, title="Not applied", severity="warning", timeout=10, markup=False)

    @work
    async def action_pick_model(self) -> None:
        if self.chat.generating:
            return self.notify("A reply is in progress: Esc stops it", severity="warning")
        current = self.session.model_label if self.session is not None else self.model
        name = await self.push_screen_wait(model_picker(current, self.store))
        if name:
            self.begin_loading(name)

    # -- app-wide actions ------------------------------------------------------------------

    def exit(self, *args: Any, **kwargs: Any) -> None:
        # Every way out (Ctrl+Q, a signal, a test): messages still queued (a model that became
        # ready, a reply's end) must not redraw screens that are being taken down.
        self.chat.quitting = True
        if self.chat.is_mounted:
            draft.keep(self.chat.input.text)
        super().exit(*args, **kwargs)

    def on_key(self, event: events.Key) -> None:
        """A printable key that bubbled up to here was not typed anywhere: it was queued at a
        widget that does not type (a button, a list) before a key ahead of it in the same burst
        moved the focus to a text field, which takes it now (Tab from a dialog's Save button into
        Temperature, then "0.05", lost the digits). A text field types every printable key sent
        to it, so none of the user's own typing in a field comes this way."""
        target = self.focused
        if event.is_printable and event.character and isinstance(target, KeysInOrder):
            event.stop()
            hand_on(event, target)

    async def action_quit(self) -> None:
        self.chat.quitting = True
        if self.chat.generating and self.session is not None:
            self.session.cancel()  # the session saves the partial reply as interrupted
            try:
                await asyncio.wait_for(self.workers.wait_for_complete(), timeout=10)
            except asyncio.TimeoutError:
                pass
        self.exit()

    def all_bindings(self) -> list[Binding]:
        """The keys help and the palette list (moving around is in help's own table)."""
        return [*self.BINDINGS, *ChatScreen.ACTIONS]

    def action_help(self) -> None:
        self.push_screen(HelpScreen([(b.key, b.description) for b in self.all_bindings()]))

    def action_command_palette(self) -> None:
        """Ctrl+P on the chat only: over a dialog its actions ran under it, and a dialog left
        there acted on the chat the palette had changed (a preset's new chat lost its system
        prompt to the old F4 dialog's Ctrl+S)."""
        if self.screen is self.chat:
            super().action_command_palette()
        elif not isinstance(self.screen, CommandPalette):
            self.notify("Close this dialog first (Esc), then Ctrl+P", severity="warning")

    def get_system_commands(self, screen: Screen) -> Any:
        """Every action of the app (the key as help), and Textual's theme picker; not Textual's
        own Keys, Maximize and Screenshot entries, which are about widgets, not chats."""
        yield SystemCommand("Theme", "Change the colours (saved)", self.action_change_theme)
        yield SystemCommand("Quit", f"{key_label('ctrl+q')}: a reply in progress is stopped and saved",
                            self.action_quit)
        for b in self.all_bindings():
            if b.action == "quit" or self.chat.check_action(b.action, ()) is False:  # "Stop reply": none streams
                continue
            yield SystemCommand(b.description, key_label(b.key), self._runner(b.action))
        for action, (title, help_text) in ChatScreen.COMMANDS_EXTRA.items():
            yield SystemCommand(title, help_text, self._runner(action))

    def _runner(self, action: str) -> Callable[[], Any]:
        async def run() -> None:
            target = self if action in {b.action for b in self.BINDINGS} else self.chat
            await self.run_action(action, target)
        return run

    async def on_unmount(self) -> None:
        if self.store is not None:
            self.store.close()


CLEAR_SCREEN = "\x1b[H\x1b[2J"


def clearing_on_exit(driver_class: type[Driver]) -> type[Driver]:
    """`driver_class`, clearing the alternate screen just before leaving it. tmux (3.3a here) copies
    the alternate screen's lines into the user's screen and scrollback when the window was made
    smaller and then larger while the app ran: the conversation was left behind after quitting (a
    bare Textual app does the same; vim and less, whose last frame differs, do not). Clearing
    only ever touches the alternate screen, so the user's own screen is as it was."""

    class ClearingDriver(driver_class):  # type: ignore[misc, valid-type]
        def stop_application_mode(self) -> None:
            self.write(CLEAR_SCREEN)
            super().stop_application_mode()

    ClearingDriver.__name__ = ClearingDriver.__qualname__ = f"Clearing{driver_class.__name__}"
    return ClearingDriver
