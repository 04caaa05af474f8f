"""What the chat screen shows while the app loads a model: the loading panel (its label, spinner
and download bar, and a note of what else the load does: converting the weights first) and what
changes once a session has loaded or failed to.

`ModelLoadingView` is a base of `ChatScreen` (screens/chat.py), which provides `session`,
`viewing`, `input`, `send_when_ready`, `open_conversation()`, `show_conversation()`,
`update_status()` and `on_prompt_input_submitted()`. The app does the loading itself
(`QwenchatApp.begin_loading`) and calls `show_loading`, `session_loaded` and `session_failed`;
a download's progress and the load's note arrive as messages (tui/messages.py).
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Label, LoadingIndicator, ProgressBar

from qwenchat.remote.reference import is_remote
from qwenchat.tui import messages as msg
from qwenchat.tui.widgets.prompt_input import PromptInput
from qwenchat.tui.widgets.statusbar import StatusBar


class ModelLoadingView:
    def show_loading(self, model: str | None) -> None:
        self._loading_panel(True)
        what = ("Connecting to" if is_remote(model) else
                "Importing" if model and model.lower().endswith(".gguf") else "Loading")
        self.query_one("#loading-label", Label).update(f"{what} {model or 'the default model'}…")
        self.query_one("#loading-note").display = False  # a note of the load this one replaces
        if self.session is None:  # else the chat in use stays usable, its facts shown, until the new one is ready
            self.query_one(StatusBar).show(model=model or "", note="loading…")  # was "no model loaded" after a failure

    def _loading_panel(self, shown: bool) -> None:
        """Hidden, its spinner and its bar stop animating: their timers (16 and 15 a second)
        would otherwise wake the UI thread for nothing while a reply decodes."""
        panel = self.query_one("#loading")
        panel.display = shown
        self.query_one(LoadingIndicator).auto_refresh = 1 / 16 if shown else None
        if not shown:  # the download bar (and its inner bar) animate while it has no total yet
            for widget in panel.query("ProgressBar, ProgressBar *"):
                widget.auto_refresh = None

    async def session_loaded(self, old: Any) -> None:
        """The app has a new session (`old` is the one it replaces, or None at start-up)."""
        self._loading_panel(False)
        session = self.session
        if not session.model_info.chat_tuned:
            session.raw = True
        note = self.query_one("#mode-note", Label)
        note.update("Completion mode: this is a base model, not a chat model, so your text is continued as-is.")
        note.display = bool(session.raw)
        cid = old.conversation_id if old is not None else self.viewing
        if cid is not None:
            await self.open_conversation(cid)
        else:
            if old is not None:
                session.new(old.system_prompt)
            await self.show_conversation()
        self.update_status()
        if old is not None:
            self.notify(f"Loaded {session.model_label}", markup=False)
        if self.send_when_ready and self.input.text.strip():
            self.send_when_ready = False
            await self.on_prompt_input_submitted(PromptInput.Submitted(self.input.text))

    def session_failed(self) -> None:
        self.send_when_ready = False  # the text stays in the box; the failure says what to do
        self._loading_panel(False)
        if self.session is None:
            self.query_one(StatusBar).show(note="no model loaded: Ctrl+O picks one")

    def on_download_started(self, event: msg.DownloadStarted) -> None:
        bar = self.query_one("#download", ProgressBar)
        bar.display = True
        bar.update(total=max(1, event.total_bytes), progress=0)
        self.query_one("#loading-label", Label).update(f"{event.verb} {event.repo_id}…")

    def on_download_advanced(self, event: msg.DownloadAdvanced) -> None:
        self.query_one("#download", ProgressBar).update(total=max(1, event.total), progress=event.done)

    def on_loading_note(self, event: msg.LoadingNote) -> None:
        note = self.query_one("#loading-note", Label)
        note.update(event.text)  # under "Loading coder…": "converting the weights to int4 (once: …)"
        note.display = True

    def on_download_note(self, event: msg.DownloadNote) -> None:
        self.app.notify(event.text, title="Download", severity="warning", timeout=10, markup=False)

    def on_download_finished(self, event: msg.DownloadFinished) -> None:
        self.query_one("#download").display = False
        self.query_one("#loading-label", Label).update("Loading model…")
