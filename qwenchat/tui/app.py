"""The Textual chat app. It talks to the model only through a `ChatSession` made by the
`session_factory` it is given (tests pass a scripted fake), and to the `Store` for the sidebar
and presets. It never imports torch.

Threads: the factory (download, load) and every reply run in thread workers. A reply's chunks
go into a buffer under a lock; a timer on the UI thread moves the buffer into the Markdown view
`FLUSH_HZ` times a second, so a fast model costs a bounded number of re-renders and the keyboard
stays responsive. Ends of replies and failures come back as messages (`tui/messages.py`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, LoadingIndicator, ProgressBar

from qwenchat.tui import messages as msg
from qwenchat.tui.screens.dialogs import ConfirmScreen, EditMessageScreen, PickScreen, TextPrompt
from qwenchat.tui.screens.help import HelpScreen
from qwenchat.tui.screens.models import model_picker
from qwenchat.tui.screens.settings import FIELDS, SettingsScreen
from qwenchat.tui.screens.system_prompt import SystemPromptScreen
from qwenchat.tui.themes import DEFAULT_THEME, load_themes
from qwenchat.tui.widgets.chatlog import ChatLog, MessageView, code_blocks
from qwenchat.tui.widgets.prompt_input import PromptInput
from qwenchat.tui.widgets.sidebar import Sidebar
from qwenchat.tui.widgets.statusbar import StatusBar

# (model name or None for the default, store, download progress) -> ChatSession; may be slow
SessionFactory = Callable[[str | None, Any, Any], Any]


def error_text(err: BaseException) -> tuple[str, str | None]:
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    return message, getattr(err, "hint", None)


class QwenchatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "qwenchat"
    FLUSH_HZ = 12
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help"),
        Binding("escape", "stop", "Stop reply"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+g", "edit_last", "Edit last message", show=False),
        Binding("ctrl+s", "settings", "Sampling"),
        Binding("f4", "system_prompt", "System prompt"),
        Binding("ctrl+o", "pick_model", "Model"),
        Binding("f2", "rename_chat", "Rename chat", show=False),
        Binding("f3", "delete_chat", "Delete chat", show=False),
        Binding("ctrl+f", "search", "Search chats", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Toggle sidebar", show=False),
        Binding("f8", "copy_reply", "Copy last reply", show=False),
        Binding("f9", "copy_code", "Copy last code block", show=False),
    ]

    def __init__(self, session_factory: SessionFactory, *, model: str | None = None,
                 conversation_id: int | None = None, continue_last: bool = False,
                 theme: str | None = None, persist_theme: bool = True,
                 store_factory: Callable[[], Any] | None = None) -> None:
        super().__init__()
        self.session_factory, self.model = session_factory, model
        self.start_conversation, self.continue_last = conversation_id, continue_last
        self.requested_theme, self.persist_theme = theme, persist_theme
        self.store_factory = store_factory
        self.store: Any = None
        self.session: Any = None
        self.generating = False
        self.last_reply: Any = None
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._reply_view: MessageView | None = None
        self._query = ""
        self._quitting = False

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat"):
                yield Label("", id="mode-note")
                yield ChatLog(id="log")
                with Vertical(id="loading"):
                    yield Label("Loading model…", id="loading-label")
                    yield ProgressBar(id="download", show_eta=False)
                    yield LoadingIndicator()
                yield PromptInput(id="input")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def chatlog(self) -> ChatLog:
        return self.query_one("#log", ChatLog)

    @property
    def input(self) -> PromptInput:
        return self.query_one("#input", PromptInput)

    async def on_mount(self) -> None:
        self._setup_themes()
        from qwenchat.store import Store

        self.store = (self.store_factory or Store.open)()
        self.query_one("#download").display = False
        self.query_one("#mode-note").display = False
        self.query_one(StatusBar).show(model=self.model or "", note="loading…")
        await self.chatlog.show([])
        await self.refresh_sidebar()
        self.input.focus()
        self.set_interval(1 / self.FLUSH_HZ, self._flush)
        self._begin_loading(self.model)

    def _setup_themes(self) -> None:
        loaded = load_themes()
        for theme in loaded.themes.values():
            self.register_theme(theme)
        for problem in loaded.problems:
            self.notify(problem, title="Theme file skipped", severity="warning")
        wanted = self.requested_theme
        if wanted is None:
            try:
                from qwenchat.config import load_settings

                wanted = load_settings().theme
            except Exception as e:  # ConfigError: say so, keep going
                self.notify(error_text(e)[0], title="Config", severity="warning")
        if wanted not in self.available_themes:
            if wanted:
                self.notify(f"unknown theme {wanted!r}", severity="warning")
            wanted = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.theme = wanted
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, theme: Any) -> None:
        if not self.persist_theme:
            return
        try:
            from qwenchat.config import set_value

            set_value("theme", theme.name)
        except Exception as e:
            self.show_error(e, "Could not save the theme")

    # -- errors ----------------------------------------------------------------------------

    def show_error(self, err: BaseException, title: str = "Error") -> None:
        message, hint = error_text(err)
        self.notify(message + (f"\nFix: {hint}" if hint else ""), title=title, severity="error", timeout=10)

    # -- session loading -------------------------------------------------------------------

    def _begin_loading(self, model: str | None) -> None:
        self.query_one("#loading").display = True
        self.query_one("#loading-label", Label).update(f"Loading {model or 'the default model'}…")
        self._load_session(model)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_session(self, model: str | None) -> None:
        try:
            session = self.session_factory(model, self.store, msg.DownloadReporter(self))
        except BaseException as e:  # noqa: BLE001 - shown to the user, app keeps running
            self.post_message(msg.SessionFailed(e, model))
            return
        self.post_message(msg.SessionReady(session, model))

    async def on_session_ready(self, event: msg.SessionReady) -> None:
        old, self.session = self.session, event.session
        self.query_one("#loading").display = False
        info = self.session.engine.info
        if not info.chat_tuned:
            self.session.raw = True
        note = self.query_one("#mode-note", Label)
        note.update("Completion mode: this is a base model, not a chat model, so your text is continued as-is.")
        note.display = bool(self.session.raw)
        cid = old.conversation_id if old is not None else self.start_conversation
        if cid is None and self.continue_last and old is None:
            latest = self.store.latest_conversation()
            cid = latest.id if latest else None
        if cid is not None:
            await self.open_conversation(cid)
        else:
            if old is not None:
                self.session.new(old.system_prompt)
            await self.chatlog.show(self.session.entries)
        self.update_status()
        if old is not None:
            self.notify(f"Loaded {self.session.model_label}")

    def on_session_failed(self, event: msg.SessionFailed) -> None:
        self.query_one("#loading").display = False
        self.show_error(event.error, f"Could not load {event.model or 'the model'}")
        if self.session is None:
            self.query_one(StatusBar).show(note="no model loaded: Ctrl+O picks one")

    def on_download_started(self, event: msg.DownloadStarted) -> None:
        bar = self.query_one("#download", ProgressBar)
        bar.display = True
        bar.update(total=max(1, event.total_bytes), progress=0)
        self.query_one("#loading-label", Label).update(f"Downloading {event.repo_id}…")

    def on_download_advanced(self, event: msg.DownloadAdvanced) -> None:
        self.query_one("#download", ProgressBar).update(total=max(1, event.total), progress=event.done)

    def on_download_finished(self, event: msg.DownloadFinished) -> None:
        self.query_one("#download").display = False
        self.query_one("#loading-label", Label).update("Loading model…")

    def update_status(self) -> None:
        bar = self.query_one(StatusBar)
        if self.session is None:
            return
        info = self.session.engine.info
        r = self.last_reply
        kw: dict[str, Any] = {}
        if r is not None:
            kw = dict(used=r.usage.prompt_tokens + r.usage.completion_tokens, cached=r.usage.cached_tokens,
                      ttft=r.timings.ttft_s, tok_s=r.timings.decode_tok_s)
        bar.show(model=self.session.model_label, device=info.device, dtype=info.dtype,
                 window=info.context_window, note="completion mode" if self.session.raw else "", **kw)

    # -- conversations ---------------------------------------------------------------------

    async def refresh_sidebar(self) -> None:
        current = self.session.conversation_id if self.session is not None else None
        convs = self.store.list_conversations(limit=500, query=self._query or None)
        await self.query_one(Sidebar).set_conversations(convs, current)

    async def on_sidebar_search_changed(self, event: Sidebar.SearchChanged) -> None:
        self._query = event.query.strip()
        await self.refresh_sidebar()

    async def on_sidebar_chosen(self, event: Sidebar.Chosen) -> None:
        if self._busy():
            return
        await self.open_conversation(event.conversation_id)
        self.input.focus()

    async def open_conversation(self, conversation_id: int) -> None:
        try:
            self.session.load(conversation_id)
        except Exception as e:
            self.show_error(e, "Could not open the conversation")
            return
        self.last_reply = None
        await self.chatlog.show(self.session.entries)
        self.update_status()
        await self.refresh_sidebar()

    def _busy(self) -> bool:
        if self.session is None:
            self.notify("The model is still loading", severity="warning")
            return True
        if self.generating:
            self.notify("A reply is in progress: Esc stops it", severity="warning")
            return True
        return False

    # -- turns -----------------------------------------------------------------------------

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if self._busy():
            return
        self.input.clear()
        await self.chatlog.add("user", event.text)
        await self._start("send", event.text)

    async def _start(self, verb: str, *args: Any) -> None:
        self.generating = True
        with self._lock:
            self._pending.clear()
        self._reply_view = await self.chatlog.add("assistant", "", "pending")
        self.query_one(StatusBar).show(model=self.session.model_label, note="generating… (Esc stops)")
        self._run_turn(verb, args)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _run_turn(self, verb: str, args: tuple) -> None:
        try:
            for event in getattr(self.session, verb)(*args):
                if hasattr(event, "reply"):  # the Turn that ends the stream
                    self.post_message(msg.ReplyDone(event))
                else:
                    with self._lock:
                        self._pending.append(event.text)
        except BaseException as e:  # noqa: BLE001 - reported, the app keeps running
            self.post_message(msg.ReplyFailed(e))

    async def _flush(self) -> None:
        if self._quitting:
            return
        with self._lock:
            text = "".join(self._pending)
            self._pending.clear()
        if text and self._reply_view is not None:
            log = self.chatlog
            at_end = log.scroll_y >= log.max_scroll_y - 2
            await self._reply_view.append(text)
            if at_end:
                log.scroll_end(animate=False)

    async def on_reply_done(self, event: msg.ReplyDone) -> None:
        if self._quitting:
            return
        await self._flush()
        reply = event.turn.reply
        if self._reply_view is not None:
            self._reply_view.set_status("interrupted" if reply.finish_reason == "cancelled" else "complete")
        self._reply_view, self.generating, self.last_reply = None, False, reply
        if getattr(reply, "dropped_messages", 0):
            self.notify(f"{reply.dropped_messages} older messages were left out to fit the context window")
        self.update_status()
        await self.refresh_sidebar()

    async def on_reply_failed(self, event: msg.ReplyFailed) -> None:
        if self._quitting:
            return
        await self._flush()
        view, self._reply_view, self.generating = self._reply_view, None, False
        if view is not None:
            if view.text:
                view.set_status("interrupted")
            else:
                await view.remove()
        self.show_error(event.error, "Generation failed")
        self.update_status()
        await self.refresh_sidebar()

    # -- actions ---------------------------------------------------------------------------

    def action_stop(self) -> None:
        if self.generating and self.session is not None:
            self.session.cancel()

    async def action_quit(self) -> None:
        self._quitting = True
        if self.generating and self.session is not None:
            self.session.cancel()  # the session saves the partial reply as interrupted
            try:
                await asyncio.wait_for(self.workers.wait_for_complete(), timeout=10)
            except asyncio.TimeoutError:
                pass
        self.exit()

    def action_help(self) -> None:
        self.push_screen(HelpScreen([(b.key, b.description) for b in self.BINDINGS]))

    async def action_new_chat(self, system_prompt: str | None = None) -> None:
        if self._busy():
            return
        self.session.new(system_prompt)
        self.last_reply = None
        await self.chatlog.show([])
        self.update_status()
        await self.refresh_sidebar()
        self.input.focus()

    @work
    async def action_new_chat_with_preset(self) -> None:
        if self._busy():
            return
        presets = self.store.list_presets()
        name = await self.push_screen_wait(PickScreen(
            "New chat with preset", [(p.name, p.name) for p in presets],
            empty="No presets yet: save one from the system prompt editor (F4)"))
        if name:
            await self.action_new_chat(self.store.get_preset(name).text)
            self.notify(f"New chat with preset {name!r}")

    async def action_regenerate(self) -> None:
        if self._busy():
            return
        entries = self.session.entries
        n = len(entries)
        while n and entries[n - 1].role == "assistant":
            n -= 1
        if n == 0:
            self.notify("Nothing to regenerate yet", severity="warning")
            return
        await self.chatlog.truncate(n)
        await self._start("regenerate")

    async def edit_message(self, index: int) -> None:
        if self._busy():
            return
        entries = self.session.entries
        if not (0 <= index < len(entries)) or entries[index].role != "user":
            self.notify("Only your own messages can be edited", severity="warning")
            return
        self._edit_worker(index, entries[index].content)

    @work
    async def _edit_worker(self, index: int, text: str) -> None:
        new = await self.push_screen_wait(EditMessageScreen(text))
        if new is None or self._busy():
            return
        await self.chatlog.truncate(index)
        await self.chatlog.add("user", new)
        await self._start("edit", index, new)

    async def action_edit_last(self) -> None:
        if self.session is None:
            return
        users = [i for i, e in enumerate(self.session.entries) if e.role == "user"]
        if not users:
            self.notify("No message to edit yet", severity="warning")
            return
        await self.edit_message(users[-1])

    async def on_message_view_action(self, event: MessageView.Action) -> None:
        views = self.chatlog.views
        if event.action == "copy":
            self._copy(event.view.text, "message")
        elif event.action == "copy_code":
            blocks = code_blocks(event.view.text)
            if blocks:
                self._copy(blocks[0], "code block")
            else:
                self.notify("This message has no code block", severity="warning")
        elif event.action == "edit" and event.view in views:
            await self.edit_message(views.index(event.view))

    def _copy(self, text: str, what: str) -> None:
        self.copy_to_clipboard(text)
        self.notify(f"Copied the {what} to the clipboard")

    def _last_reply_text(self) -> str | None:
        for view in reversed(self.chatlog.views):
            if view.role == "assistant" and view.text:
                return view.text
        return None

    def action_copy_reply(self) -> None:
        text = self._last_reply_text()
        if text is None:
            self.notify("No reply to copy yet", severity="warning")
        else:
            self._copy(text, "reply")

    def action_copy_code(self) -> None:
        for view in reversed(self.chatlog.views):
            blocks = code_blocks(view.text)
            if blocks:
                self._copy(blocks[-1], "code block")
                return
        self.notify("No code block to copy yet", severity="warning")

    @work
    async def action_settings(self) -> None:
        if self.session is None:
            return self.notify("The model is still loading", severity="warning")
        options = self.session.options
        current = {f: getattr(options, f, None) for f in FIELDS}
        values = await self.push_screen_wait(SettingsScreen(current, self.model_defaults()))
        if values is None:
            return
        try:
            self.session.set_options(replace(options, **values))
        except Exception as e:  # the engine's own validation: nothing was changed
            self.show_error(e, "Setting refused")
            return
        self.notify("Sampling settings saved for this conversation")

    def model_defaults(self) -> dict[str, Any]:
        defaults = getattr(self.session.engine, "defaults", None)
        sampling = getattr(defaults, "sampling", None)
        out = {f: getattr(sampling, f, None) for f in FIELDS if f != "max_new_tokens"}
        out["max_new_tokens"] = getattr(defaults, "max_new_tokens", None)
        return out

    @work
    async def action_system_prompt(self) -> None:
        if self.session is None:
            return self.notify("The model is still loading", severity="warning")
        text = await self.push_screen_wait(SystemPromptScreen(self.store, self.session.system_prompt))
        if text is not None:
            try:
                self.session.set_system_prompt(text or None)
            except Exception as e:
                return self.show_error(e)
            self.notify("System prompt cleared" if not text else "System prompt set for this conversation")

    @work
    async def action_pick_model(self) -> None:
        if self.generating:
            return self.notify("A reply is in progress: Esc stops it", severity="warning")
        current = self.session.model_label if self.session is not None else self.model
        name = await self.push_screen_wait(model_picker(current))
        if name:
            self.model = name
            self._begin_loading(name)

    @work
    async def action_rename_chat(self) -> None:
        sidebar = self.query_one(Sidebar)
        cid = sidebar.highlighted_id or (self.session.conversation_id if self.session else None)
        if cid is None:
            return self.notify("Nothing to rename: the chat is saved with its first message", severity="warning")
        conv = self.store.get_conversation(cid)
        title = await self.push_screen_wait(TextPrompt("Rename conversation:", conv.title or ""))
        if title:
            try:
                self.store.rename_conversation(cid, title)
            except Exception as e:
                return self.show_error(e)
            await self.refresh_sidebar()

    @work
    async def action_delete_chat(self) -> None:
        sidebar = self.query_one(Sidebar)
        cid = sidebar.highlighted_id or (self.session.conversation_id if self.session else None)
        if cid is None:
            return
        conv = self.store.get_conversation(cid)
        if not await self.push_screen_wait(ConfirmScreen(f"Delete “{conv.display_title}” and all its messages?")):
            return
        if self.session is not None and self.session.conversation_id == cid:
            if self.generating:
                return self.notify("Stop the reply first (Esc)", severity="warning")
            self.session.new(None)
            self.last_reply = None
            await self.chatlog.show([])
        self.store.delete_conversation(cid)
        await self.refresh_sidebar()
        self.notify(f"Deleted “{conv.display_title}”")

    def action_search(self) -> None:
        self.query_one(Sidebar).display = True
        self.query_one("#search").focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = not sidebar.display

    def get_system_commands(self, screen: Screen) -> Any:
        yield from super().get_system_commands(screen)
        extra = {"clear_chat": ("Clear conversation", "Start a new, empty conversation"),
                 "new_chat_with_preset": ("New chat with preset", "Start a conversation with a saved system prompt")}
        for b in self.BINDINGS:
            if b.action in ("quit",):
                continue
            yield SystemCommand(b.description, f"{b.description} ({b.key})", self._runner(b.action))
        for action, (title, help_text) in extra.items():
            yield SystemCommand(title, help_text, self._runner(action))

    def _runner(self, action: str) -> Callable[[], Any]:
        async def run() -> None:
            await self.run_action(action)
        return run

    async def action_clear_chat(self) -> None:
        await self.action_new_chat()

    async def on_unmount(self) -> None:
        if self.store is not None:
            self.store.close()
