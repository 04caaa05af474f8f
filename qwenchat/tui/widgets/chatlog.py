"""The conversation: one `MessageView` per entry of the session's active branch. Assistant
replies are Markdown (code blocks highlighted) and grow by `append` while they stream; the app
batches the appends, so this widget never sees one call per token."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Markdown, Static

_CODE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)


def code_blocks(text: str) -> list[str]:
    return [m.group(1).rstrip("\n") for m in _CODE.finditer(text)]


class MessageView(Vertical, can_focus=True):
    DEFAULT_CSS = """
    MessageView { height: auto; padding: 0 1; margin: 0 0 1 0; }
    MessageView:focus { background: $boost; }
    MessageView > .role { color: $text-muted; text-style: bold; }
    MessageView.user > .role { color: $secondary; }
    MessageView.assistant > .role { color: $primary; }
    MessageView > Markdown { margin: 0; padding: 0; }
    MessageView > .status { color: $warning; text-style: italic; }
    """
    BINDINGS = [
        Binding("c", "copy", "Copy message"),
        Binding("k", "copy_code", "Copy code block"),
        Binding("e", "edit", "Edit and resend"),
    ]

    class Action(Message):
        def __init__(self, view: "MessageView", action: str) -> None:
            super().__init__()
            self.view, self.action = view, action

    def __init__(self, role: str, text: str = "", status: str = "complete") -> None:
        super().__init__(classes=role)
        self.role, self.text, self.status = role, text, status

    def compose(self) -> ComposeResult:
        label = {"user": "You", "assistant": "Assistant", "system": "System"}.get(self.role, self.role)
        yield Static(label, classes="role")
        yield Markdown(self.text)
        yield Static(self._status_text(), classes="status")

    def _status_text(self) -> str:
        return {"interrupted": "⏹ interrupted", "error": "⚠ failed", "pending": ""}.get(self.status, "")

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    async def append(self, text: str) -> None:
        self.text += text
        await self.markdown.append(text)

    def set_status(self, status: str) -> None:
        self.status = status
        self.query_one(".status", Static).update(self._status_text())

    def action_copy(self) -> None:
        self.post_message(self.Action(self, "copy"))

    def action_copy_code(self) -> None:
        self.post_message(self.Action(self, "copy_code"))

    def action_edit(self) -> None:
        self.post_message(self.Action(self, "edit"))


class ChatLog(VerticalScroll):
    DEFAULT_CSS = """
    ChatLog { height: 1fr; padding: 0 1; }
    ChatLog > .empty { color: $text-muted; padding: 1 2; }
    """

    @property
    def views(self) -> list[MessageView]:
        return list(self.query_children(MessageView))

    async def show(self, entries: list) -> None:
        await self.remove_children()
        if not entries:
            await self.mount(Static("Start a conversation: type below and press Enter.", classes="empty"))
            return
        await self.mount_all([MessageView(e.role, e.content, e.status) for e in entries])
        self.scroll_end(animate=False)

    async def add(self, role: str, text: str = "", status: str = "complete") -> MessageView:
        for placeholder in self.query_children(".empty"):
            await placeholder.remove()
        view = MessageView(role, text, status)
        await self.mount(view)
        self.scroll_end(animate=False)
        return view

    async def truncate(self, n: int) -> None:
        """Keep only the first `n` message views."""
        extra = self.views[n:]
        if extra:
            await self.remove_children(extra)
