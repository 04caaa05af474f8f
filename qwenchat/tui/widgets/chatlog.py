"""The conversation: the system prompt (dim, collapsible) at the top, then one `MessageView`
per entry of the session's active branch.

A user's message is shown exactly as written: plain text, never parsed as Markdown or markup,
so line breaks, leading spaces and `[brackets]` stay. Assistant replies are Markdown (code
blocks highlighted) where a single line break stays a line break (`qwenchat/markdown.py`),
except a reply written under a JSON output constraint: JSON, shown as written in one code block
(`reply_language`; a stored reply's own settings say which). `ReplyView` (`widgets/reply.py`)
draws both; they grow by `append` while they stream; the screen batches the appends, so this
widget never sees one call per token. Each message has a header (who, and `< 2/3 >` when it has
siblings: other regenerations or edits) and a dim details line (time, model, tokens, speed:
`tui/details.py`).
The widget only shows what it is given; the screen asks the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import MountError
from textual.message import Message
from textual.widgets import Collapsible, Static

from qwenchat.markdown import CodeBlock
from qwenchat.markdown import code_blocks as _blocks
from qwenchat.store.records import reply_constraint
from qwenchat.tui.details import details as details_of
from qwenchat.tui.widgets.prompt_input import TAB_WIDTH
from qwenchat.tui.widgets.reply import ReplyView

Branch = tuple[int, int]  # (1-based position among siblings, number of siblings)


def code_blocks(text: str) -> list[str]:
    """The code of every code block in `text`, in order."""
    return [b.code for b in _blocks(text)]


def reply_language(constraint: Any) -> str | None:
    """How a reply written under output constraint `constraint` is shown: "json" (a code block of
    JSON, as written) for any constraint, None (Markdown) for none."""
    return None if constraint is None else "json"


def stored_language(entry: Any) -> str | None:
    """`reply_language` of a stored reply: the settings it was written with are in its meta (a
    reply whose process died before it ended has none: Markdown then, nothing is guessed)."""
    return reply_language(reply_constraint(getattr(entry, "role", ""), getattr(entry, "meta", None)))


def branch_label(branch: Branch | None) -> str:
    return f"< {branch[0]}/{branch[1]} >" if branch and branch[1] > 1 else ""


class BranchSwitch(Static):
    """`< 2/3 >`: a click on its left half asks for the previous version, on its right half
    for the next (the screen switches; Alt+Left/Alt+Right do the same from the keyboard)."""

    def on_click(self, event: events.Click) -> None:
        view = next((a for a in self.ancestors if isinstance(a, MessageView)), None)
        if view is not None and self.content_size.width:
            event.stop()
            left = event.x < self.content_size.width // 2
            view.post_message(MessageView.Action(view, "branch_prev" if left else "branch_next"))


class MessageView(Vertical, can_focus=True):
    DEFAULT_CSS = """
    MessageView { height: auto; padding: 0 1; margin: 0 0 1 0; }
    MessageView:focus { background: $boost; }
    MessageView > .header { height: 1; }
    MessageView .role { width: auto; color: $text-muted; text-style: bold; }
    MessageView.user .role { color: $secondary; }
    MessageView.assistant .role { color: $primary; }
    MessageView .branch { width: auto; margin-left: 2; color: $accent; }
    MessageView > .plain { margin: 0; padding: 0; }
    MessageView > ReplyView { margin: 0; padding: 0; }
    MessageView > .details { color: $text-muted; text-style: dim; }
    MessageView > .status { color: $warning; text-style: italic; }
    """
    # Modified keys only: a user who Tabbed here may believe they are typing.
    BINDINGS = [
        Binding("f8", "copy", "Copy message"),
        Binding("ctrl+g", "edit", "Edit and resend"),
    ]

    class Action(Message):
        def __init__(self, view: "MessageView", action: str) -> None:
            super().__init__()
            self.view, self.action = view, action

    def __init__(self, role: str, text: str = "", status: str = "complete", *,
                 details: str = "", branch: Branch | None = None, language: str | None = None) -> None:
        """`language`: a reply that is code as a whole (`reply_language`); None: Markdown."""
        super().__init__(classes=role)
        self.role, self.text, self.status = role, text, status
        self.details, self.branch, self.language = details, branch, language

    def compose(self) -> ComposeResult:
        label = {"user": "You", "assistant": "Assistant", "system": "System"}.get(self.role, self.role)
        with Horizontal(classes="header"):
            yield Static(label, classes="role", markup=False)
            yield BranchSwitch(branch_label(self.branch), classes="branch", markup=False)
        if self.role == "assistant":
            yield ReplyView(self.text, streaming=self.status == "pending", language=self.language)
        else:  # as typed: no Markdown reflow, no markup
            yield Static(self.text.expandtabs(TAB_WIDTH), classes="plain", markup=False)  # as the box showed it
        yield Static(self.details, classes="details", markup=False)
        yield Static(self._status_text(), classes="status")

    def on_mount(self) -> None:
        self.set_details(self.details)
        self.set_status(self.status)

    def _status_text(self) -> str:
        return {"interrupted": "⏹ interrupted", "error": "⚠ failed", "pending": ""}.get(self.status, "")

    @property
    def reply(self) -> ReplyView:
        return self.query_one(ReplyView)

    async def append(self, text: str) -> None:
        self.text += text
        if self.role == "assistant":
            self.reply.append(text)
        else:
            self.query_one(".plain", Static).update(self.text.expandtabs(TAB_WIDTH))

    def set_status(self, status: str, note: str | None = None) -> None:
        """`note` replaces the status's own words (a reply cut at the token limit)."""
        self.status = status
        if self.role == "assistant":
            self.reply.streaming = status == "pending"
        text = self._status_text() if note is None else note
        line = self.query_one(".status", Static)
        line.update(text)
        line.display = bool(text)  # no blank line under every message

    def set_language(self, language: str | None) -> None:
        """A reply continued under another output setting is shown as it will be stored."""
        self.language = language
        if self.role == "assistant":
            self.reply.language = language

    def code_blocks(self) -> list[CodeBlock]:
        """The code blocks a user can copy: a JSON reply's whole text, exactly, else each block
        of the Markdown."""
        if self.language is not None and self.text.strip():
            return [CodeBlock(self.language, self.text)]
        return _blocks(self.text)

    def set_details(self, text: str) -> None:
        self.details = text
        line = self.query_one(".details", Static)
        line.update(text)
        line.display = bool(text)

    def set_branch(self, branch: Branch | None) -> None:
        self.branch = branch
        self.query_one(".branch", Static).update(branch_label(branch))

    def action_copy(self) -> None:
        self.post_message(self.Action(self, "copy"))

    def action_copy_code(self) -> None:
        self.post_message(self.Action(self, "copy_code"))

    def action_edit(self) -> None:
        self.post_message(self.Action(self, "edit"))


class SystemPromptView(Collapsible):
    """The conversation's system prompt, dim, above the first message; click or Enter on its
    title folds it."""

    DEFAULT_CSS = """
    SystemPromptView { margin: 0 0 1 0; padding: 0; border-top: none; background: transparent; }
    SystemPromptView > Contents { padding: 0 0 0 2; }
    SystemPromptView .prompt { color: $text-muted; text-style: dim; }
    SystemPromptView CollapsibleTitle { color: $text-muted; }
    """

    def __init__(self, text: str, collapsed: bool = False) -> None:
        self.text = text
        super().__init__(Static(text.expandtabs(TAB_WIDTH), classes="prompt", markup=False), title="System prompt",
                         collapsed=collapsed)


class ChatLog(VerticalScroll):
    """Redraws (`show`) and changes (`add`, `truncate`, `set_system_prompt`) take turns: a key's
    action runs on the app's task and a message's handler on the screen's, so a new chat's
    redraw and a sent message's bubble can otherwise interleave, and a bubble removed before it
    has mounted crashes the app."""

    DEFAULT_CSS = """
    ChatLog { height: 1fr; padding: 0 1; }
    ChatLog > .empty { color: $text-muted; padding: 1 2; }
    """
    _lock: asyncio.Lock | None = None

    @property
    def _turn(self) -> asyncio.Lock:
        if self._lock is None:  # made on the running loop, not at import
            self._lock = asyncio.Lock()
        return self._lock

    @asynccontextmanager
    async def _redraw(self) -> AsyncIterator[None]:
        """A turn for a redraw; one that meets the log already taken down (Ctrl+N, then Ctrl+Q
        at once: the key's action ran on while the app closed) ends quietly, not in a traceback."""
        async with self._turn:
            try:
                yield
            except MountError:
                if self.is_attached:
                    raise

    @property
    def views(self) -> list[MessageView]:
        return list(self.query_children(MessageView))

    @property
    def system_prompt_view(self) -> SystemPromptView | None:
        found = list(self.query_children(SystemPromptView))
        return found[0] if found else None

    async def show(self, entries: Sequence[Any], *, system_prompt: str | None = None,
                   branches: Sequence[Branch | None] | None = None) -> None:
        """Show a conversation from scratch: `entries` are session `Entry`s; `branches[i]` is
        `session.branch(i)` (None or missing: no indicator)."""
        async with self._redraw():
            await self._show(entries, system_prompt, branches)

    async def _show(self, entries: Sequence[Any], system_prompt: str | None,
                    branches: Sequence[Branch | None] | None) -> None:
        collapsed = self.system_prompt_view.collapsed if self.system_prompt_view else False
        await self.remove_children()
        if system_prompt:
            await self.mount(SystemPromptView(system_prompt, collapsed))
        if not entries:
            await self.mount(Static("Start a conversation: type below and press Enter.", classes="empty"))
            return
        branches = list(branches or [])
        await self.mount_all([
            MessageView(e.role, e.content, e.status, details=details_of(e),
                        branch=branches[i] if i < len(branches) else None, language=stored_language(e))
            for i, e in enumerate(entries)
        ])
        self.scroll_end(animate=False)
        self.anchor()  # an opened chat stays at its latest message through resizes, until scrolled

    def annotate(self, entries: Sequence[Any], branches: Sequence[Branch | None] | None = None) -> None:
        """Bring each view's details line and branch indicator up to date (after a reply, a
        switch of branch) without redrawing the messages."""
        branches = list(branches or [])
        for i, (view, entry) in enumerate(zip(self.views, entries)):
            view.set_details(details_of(entry))
            view.set_branch(branches[i] if i < len(branches) else None)

    async def set_system_prompt(self, text: str | None) -> None:
        async with self._redraw():
            await self._set_system_prompt(text)

    async def _set_system_prompt(self, text: str | None) -> None:
        current = self.system_prompt_view
        if current is not None:
            if current.text == text:
                return
            await current.remove()
        if text:
            first = self.children[0] if self.children else None
            await self.mount(SystemPromptView(text), before=first)

    async def add(self, role: str, text: str = "", status: str = "complete", language: str | None = None) -> MessageView:
        async with self._turn:
            return await self._add(role, text, status, language)

    async def _add(self, role: str, text: str, status: str, language: str | None) -> MessageView:
        for placeholder in self.query_children(".empty"):
            await placeholder.remove()
        view = MessageView(role, text, status, language=language)
        await self.mount(view)
        self.scroll_end(animate=False)
        return view

    async def truncate(self, n: int) -> None:
        """Keep only the first `n` message views."""
        async with self._redraw():
            extra = self.views[n:]
            if extra:
                await self.remove_children(extra)
