"""The conversation list with a search box. It shows what the screen gives it (newest first),
grouped under Today / Yesterday / older dates, each chat with its model, and reports searches,
Enter in the search box and choices upward; it never reads the store itself. Titles and model
names are user text: shown as plain text, never markup."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView

from qwenchat.model_label import short_model
from qwenchat.tui.widgets.text_fields import LineInput


def day_label(stamp: str | None, today: date | None = None) -> str:
    """"Today", "Yesterday" or the date (`2026-11-20`) of an ISO timestamp, in local time."""
    today = today or date.today()
    try:
        when = datetime.fromisoformat(stamp or "").astimezone().date()
    except ValueError:
        return "Older"
    if when == today:
        return "Today"
    if when == today - timedelta(days=1):
        return "Yesterday"
    return when.isoformat()


class DayHeader(ListItem):
    """A group title; disabled, so the list's cursor skips it."""

    def __init__(self, text: str) -> None:
        super().__init__(Label(text, markup=False), disabled=True, classes="day")


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str, model: str = "") -> None:
        super().__init__(Label(title, markup=False, classes="title"),
                         Label(short_model(model), markup=False, classes="model"))
        self.conversation_id = conversation_id


class Sidebar(Vertical):
    DEFAULT_CSS = """
    Sidebar { width: 30; border-right: vkey $border-blurred; background: $background; }
    Sidebar > Input { margin: 0; border: round $border-blurred; }
    Sidebar > Input:focus { border: round $border; }
    Sidebar > ListView { height: 1fr; background: transparent; }
    Sidebar ListItem Label { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    Sidebar ListItem .model { color: $text-muted; }
    Sidebar ListItem.day { color: $text-accent; text-style: bold; padding-top: 1; }
    Sidebar ListItem.day:disabled { opacity: 1; }
    """

    class SearchChanged(Message):
        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    class SearchSubmitted(Message):
        """Enter in the search box: open the first match."""

    class Chosen(Message):
        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rows: list[tuple] = []  # what the list shows: ("day", label) and ("chat", id, title, model)

    def compose(self) -> ComposeResult:
        yield LineInput(placeholder="Search chats…", id="search")
        yield ListView(id="conversations")

    @property
    def list_view(self) -> ListView:
        return self.query_one("#conversations", ListView)

    @property
    def search_box(self) -> Input:
        return self.query_one("#search", Input)

    @property
    def highlighted_id(self) -> int | None:
        item = self.list_view.highlighted_child
        return item.conversation_id if isinstance(item, ConversationItem) else None

    @property
    def conversation_ids(self) -> list[int]:
        return [i.conversation_id for i in self.list_view.query_children(ConversationItem)]

    async def set_conversations(self, conversations: list[Any], current: int | None, empty: str = "") -> None:
        """Show these chats, `current` highlighted (`empty`: the line shown for none). The rows are
        rebuilt only when what they show changed: a rebuild blanks the list for a moment, and a key
        pressed then (Enter on a chat just after Ctrl+N) was lost."""
        rows: list[tuple] = [("day", empty)] if empty and not conversations else []
        day = None
        for c in conversations:
            label = day_label(c.updated_at)
            if label != day:
                rows.append(("day", label))
                day = label
            rows.append(("chat", c.id, c.display_title, c.model))
        lv = self.list_view
        if rows != self._rows:
            self._rows = rows
            await lv.clear()
            if rows:
                await lv.extend(DayHeader(r[1]) if r[0] == "day" else ConversationItem(*r[1:]) for r in rows)
        lv.index = next((i for i, row in enumerate(rows) if row[0] == "chat" and row[1] == current), None)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """Tab onto the list highlights a chat (it highlighted nothing until an arrow key)."""
        lv = self.list_view
        if event.widget is lv and lv.index is None:
            lv.index = next((i for i, item in enumerate(lv.children) if isinstance(item, ConversationItem)), None)

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))

    @on(Input.Submitted, "#search")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.SearchSubmitted())

    @on(ListView.Selected, "#conversations")
    def _chosen(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Chosen(event.item.conversation_id))
