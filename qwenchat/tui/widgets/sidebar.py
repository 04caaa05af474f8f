"""The conversation list with a search box. It shows what the app gives it (newest first) and
reports searches and choices upward; it never reads the store itself."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str) -> None:
        super().__init__(Label(title, markup=False))
        self.conversation_id = conversation_id


class Sidebar(Vertical):
    DEFAULT_CSS = """
    Sidebar { width: 30; border-right: vkey $primary 40%; }
    Sidebar > Input { margin: 0; border: round $primary 40%; }
    Sidebar > ListView { height: 1fr; background: transparent; }
    Sidebar ListItem Label { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    class SearchChanged(Message):
        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    class Chosen(Message):
        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search chats…", id="search")
        yield ListView(id="conversations")

    @property
    def list_view(self) -> ListView:
        return self.query_one("#conversations", ListView)

    @property
    def highlighted_id(self) -> int | None:
        item = self.list_view.highlighted_child
        return item.conversation_id if isinstance(item, ConversationItem) else None

    async def set_conversations(self, conversations: list[Any], current: int | None) -> None:
        lv = self.list_view
        await lv.clear()
        items = [ConversationItem(c.id, c.display_title) for c in conversations]
        if items:
            await lv.extend(items)
        for i, c in enumerate(conversations):
            if c.id == current:
                lv.index = i
                break

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))

    @on(ListView.Selected, "#conversations")
    def _chosen(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Chosen(event.item.conversation_id))
