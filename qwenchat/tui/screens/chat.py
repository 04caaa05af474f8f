"""The chat screen: sidebar, conversation, message box, status bar, and every chat action.

It reads the session and the store through the app (`self.app.session`, `self.app.store`); the
app owns loading the session and quitting. Widgets report upward with messages handled here.

Threads: every reply runs in a thread worker. Its chunks go into a buffer under a lock; a timer
on the UI thread moves the buffer into the Markdown view `FLUSH_HZ` times a second, so a fast
model costs a bounded number of re-renders and the keyboard stays responsive. Ends of replies and
failures come back as messages (`tui/messages.py`).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Label, LoadingIndicator, ProgressBar

from qwenchat.tui import messages as msg
from qwenchat.tui.screens.dialogs import ConfirmScreen, EditMessageScreen, PickScreen, TextPrompt
from qwenchat.tui.screens.message_features import FEATURE_BINDINGS, FEATURE_COMMANDS, MessageFeatures
from qwenchat.tui.screens.settings import FIELDS, SettingsScreen
from qwenchat.tui.screens.system_prompt import SystemPromptScreen
from qwenchat.tui.widgets.chatlog import ChatLog, MessageView
from qwenchat.tui.widgets.prompt_input import PromptInput
from qwenchat.tui.widgets.sidebar import Sidebar
from qwenchat.tui.widgets.statusbar import StatusBar


class ChatScreen(MessageFeatures):
    FLUSH_HZ = 12
    BINDINGS = [
        Binding("escape", "stop", "Stop reply"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+g", "edit_last", "Edit last message", show=False),
        Binding("ctrl+s", "settings", "Sampling"),
        Binding("f4", "system_prompt", "System prompt"),
        Binding("f2", "rename_chat", "Rename chat", show=False),
        Binding("f3", "delete_chat", "Delete chat", show=False),
        Binding("ctrl+f", "search", "Search chats", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Toggle sidebar", show=False),
        Binding("f8", "copy_reply", "Copy last reply", show=False),
        *FEATURE_BINDINGS,  # branches, attach, copy a code block (message_features.py)
    ]
    # palette entries without a key of their own: action -> (title, help)
    COMMANDS_EXTRA = {
        "clear_chat": ("Clear conversation", "Start a new, empty conversation"),
        "new_chat_with_preset": ("New chat with preset", "Start a conversation with a saved system prompt"),
        **FEATURE_COMMANDS,
    }

    def __init__(self) -> None:
        super().__init__()
        self.generating = False
        self.quitting = False
        self.last_reply: Any = None
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._reply_view: MessageView | None = None
        self._query = ""

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
    def session(self) -> Any:
        return self.app.session

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def chatlog(self) -> ChatLog:
        return self.query_one("#log", ChatLog)

    @property
    def input(self) -> PromptInput:
        return self.query_one("#input", PromptInput)

    async def on_mount(self) -> None:
        self.query_one("#download").display = False
        self.query_one("#mode-note").display = False
        self.query_one(StatusBar).show(model=self.app.model or "", note="loading…")
        await self.chatlog.show([])
        await self.refresh_sidebar()
        self.input.focus()
        self.set_interval(1 / self.FLUSH_HZ, self._drain_reply)
        self.app.begin_loading(self.app.model)

    # -- model loading (the app loads; this screen shows it) ---------------------------------

    def show_loading(self, model: str | None) -> None:
        self.query_one("#loading").display = True
        self.query_one("#loading-label", Label).update(f"Loading {model or 'the default model'}…")

    async def session_loaded(self, old: Any) -> None:
        """The app has a new session (`old` is the one it replaces, or None at start-up)."""
        self.query_one("#loading").display = False
        session = self.session
        if not session.engine.info.chat_tuned:
            session.raw = True
        note = self.query_one("#mode-note", Label)
        note.update("Completion mode: this is a base model, not a chat model, so your text is continued as-is.")
        note.display = bool(session.raw)
        cid = old.conversation_id if old is not None else self.app.start_conversation
        if cid is None and self.app.continue_last and old is None:
            latest = self.store.latest_conversation()
            cid = latest.id if latest else None
        if cid is not None:
            await self.open_conversation(cid)
        else:
            if old is not None:
                session.new(old.system_prompt)
            await self.show_conversation()
        self.update_status()
        if old is not None:
            self.notify(f"Loaded {session.model_label}")

    def session_failed(self) -> None:
        self.query_one("#loading").display = False
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
            self.app.show_error(e, "Could not open the conversation")
            return
        self.last_reply = None
        await self.show_conversation()
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
        if self.expand_file_command(event.text):  # /file PATH: into the box, not sent
            return
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

    async def _drain_reply(self) -> None:
        """Move the streamed text buffered by the worker into the reply's view.
        (Not named `_flush`: that name is Textual's own, on App.)"""
        if self.quitting:
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
        if self.quitting:
            return
        await self._drain_reply()
        reply = event.turn.reply
        if self._reply_view is not None:
            self._reply_view.set_status("interrupted" if reply.finish_reason == "cancelled" else "complete")
        self._reply_view, self.generating, self.last_reply = None, False, reply
        if getattr(reply, "dropped_messages", 0):
            self.notify(f"{reply.dropped_messages} older messages were left out to fit the context window")
        self.update_status()
        await self.refresh_sidebar()

    async def on_reply_failed(self, event: msg.ReplyFailed) -> None:
        if self.quitting:
            return
        await self._drain_reply()
        view, self._reply_view, self.generating = self._reply_view, None, False
        if view is not None:
            if view.text:
                view.set_status("interrupted")
            else:
                await view.remove()
        self.app.show_error(event.error, "Generation failed")
        self.update_status()
        await self.refresh_sidebar()

    # -- actions ---------------------------------------------------------------------------

    def action_stop(self) -> None:
        if self.generating and self.session is not None:
            self.session.cancel()

    async def action_new_chat(self, system_prompt: str | None = None) -> None:
        if self._busy():
            return
        self.session.new(system_prompt)
        self.last_reply = None
        await self.show_conversation()
        self.update_status()
        await self.refresh_sidebar()
        self.input.focus()

    async def action_clear_chat(self) -> None:
        await self.action_new_chat()

    @work
    async def action_new_chat_with_preset(self) -> None:
        if self._busy():
            return
        presets = self.store.list_presets()
        name = await self.app.push_screen_wait(PickScreen(
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
        new = await self.app.push_screen_wait(EditMessageScreen(text))
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
            self.copy_code_block(event.view)
        elif event.action == "edit" and event.view in views:
            await self.edit_message(views.index(event.view))

    def _copy(self, text: str, what: str) -> None:
        self.app.copy_to_clipboard(text)
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

    @work
    async def action_settings(self) -> None:
        if self.session is None:
            return self.notify("The model is still loading", severity="warning")
        options = self.session.options
        current = {f: getattr(options, f, None) for f in FIELDS}
        values = await self.app.push_screen_wait(SettingsScreen(current, self.model_defaults()))
        if values is None:
            return
        try:
            self.session.set_options(replace(options, **values))
        except Exception as e:  # the engine's own validation: nothing was changed
            self.app.show_error(e, "Setting refused")
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
        text = await self.app.push_screen_wait(SystemPromptScreen(self.store, self.session.system_prompt))
        if text is not None:
            try:
                self.session.set_system_prompt(text or None)
            except Exception as e:
                return self.app.show_error(e)
            await self.chatlog.set_system_prompt(self.session.system_prompt)
            self.notify("System prompt cleared" if not text else "System prompt set for this conversation")

    @work
    async def action_rename_chat(self) -> None:
        sidebar = self.query_one(Sidebar)
        cid = sidebar.highlighted_id or (self.session.conversation_id if self.session else None)
        if cid is None:
            return self.notify("Nothing to rename: the chat is saved with its first message", severity="warning")
        conv = self.store.get_conversation(cid)
        title = await self.app.push_screen_wait(TextPrompt("Rename conversation:", conv.title or ""))
        if title:
            try:
                self.store.rename_conversation(cid, title)
            except Exception as e:
                return self.app.show_error(e)
            await self.refresh_sidebar()

    @work
    async def action_delete_chat(self) -> None:
        sidebar = self.query_one(Sidebar)
        cid = sidebar.highlighted_id or (self.session.conversation_id if self.session else None)
        if cid is None:
            return
        conv = self.store.get_conversation(cid)
        if not await self.app.push_screen_wait(ConfirmScreen(f"Delete “{conv.display_title}” and all its messages?")):
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
