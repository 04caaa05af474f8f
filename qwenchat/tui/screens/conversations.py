"""What the chat screen does with whole conversations: the sidebar (search, dates), opening a
chat (read-only from the store while no model is loaded: browsing needs no model), new chats,
presets, rename, delete, and showing or hiding the sidebar.

`ConversationActions` is a base of `ChatScreen` (screens/chat.py), which provides `session`,
`store`, `chatlog`, `input`, `generating`, `quitting`, `last_reply`, `_busy()`, `update_status()`
and `show_conversation()`. Titles and preset names are user text: every notification that shows one
is plain text (`markup=False`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual import work
from textual.screen import Screen
from textual.widget import Widget

from qwenchat.session_records import branch_of, entry_of
from qwenchat.tui.screens.dialogs import ConfirmScreen, PickScreen, TextPrompt
from qwenchat.tui.widgets.sidebar import Sidebar


def stored_entries(store: Any, conversation_id: int) -> list[Any]:
    """The active branch of a stored conversation as session `Entry`s (no model needed)."""
    return [entry_of(m) for m in store.thread(conversation_id)]


class ConversationActions(Screen[None]):
    NARROW = 80  # below this width the sidebar hides; Ctrl+B shows it over the chat

    _query = ""
    _query_floor = 0  # a search never hides a chat with a larger id (created after it)
    viewing: int | None = None  # the conversation shown read-only while no session exists
    _sidebar_lock: asyncio.Lock | None = None

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one(Sidebar)

    # -- the list ------------------------------------------------------------------------------

    async def refresh_sidebar(self) -> None:
        if self.quitting:  # nothing to list on a screen being taken down
            return
        if self._sidebar_lock is None:
            self._sidebar_lock = asyncio.Lock()
        async with self._sidebar_lock:  # two refreshes at once would interleave clear and extend
            current = self.session.conversation_id if self.session is not None else self.viewing
            convs = self.store.list_conversations(limit=500, query=self._query or None)
            if self._query:
                shown = {c.id for c in convs}
                newer = [c for c in self.store.list_conversations(limit=50)
                         if c.id > self._query_floor and c.id not in shown]
                convs = sorted(convs + newer, key=lambda c: (c.updated_at, c.id), reverse=True)
            await self.sidebar.set_conversations(convs, current, empty="No chat matches" if self._query else "")

    async def on_sidebar_search_changed(self, event: Sidebar.SearchChanged) -> None:
        query = event.query.strip()
        if query and not self._query:  # a new search: chats made from now on stay listed
            self._query_floor = max((c.id for c in self.store.list_conversations()), default=0)
        self._query = query
        await self.refresh_sidebar()

    async def on_sidebar_search_submitted(self, event: Sidebar.SearchSubmitted) -> None:
        ids = self.sidebar.conversation_ids
        if not ids:
            self.notify("No chat matches the search", severity="warning")
            return
        await self.choose_conversation(ids[0])

    async def on_sidebar_chosen(self, event: Sidebar.Chosen) -> None:
        await self.choose_conversation(event.conversation_id)

    async def choose_conversation(self, conversation_id: int) -> None:
        if self.generating:
            self.notify("A reply is in progress: Esc stops it", severity="warning")
            return
        if self.session is None:
            await self.view_stored(conversation_id)
            self._load_its_model(conversation_id)
        else:
            await self.open_conversation(conversation_id)
        self.close_sidebar_overlay()
        self.input.focus()

    async def clear_search(self) -> None:
        self.sidebar.search_box.value = ""
        if self._query:
            self._query = ""
            await self.refresh_sidebar()

    # -- opening --------------------------------------------------------------------------------

    async def open_conversation(self, conversation_id: int) -> None:
        try:
            self.session.load(conversation_id)
        except Exception as e:
            self.app.show_error(e, "Could not open the conversation")
            return
        self.viewing = None
        await self.show_session_chat()

    async def show_session_chat(self) -> None:
        """Show the chat the session just opened or started, with the status bar's figures reset
        (they are the last reply's: a deleted chat's stayed) and the sidebar's highlight on it."""
        self.last_reply = None
        await self.show_conversation()
        if self.quitting:  # Ctrl+Q while it redrew: the screen is being taken down
            return
        self.update_status()
        await self.refresh_sidebar()

    def _load_its_model(self, conversation_id: int) -> None:
        """No model, as the last load failed (offline, a typo): a chat opened from the sidebar
        loads the model it was answered with, as `qwenchat -c` would (its messages then asked for
        Ctrl+O). A load in progress is left alone."""
        app = self.app
        if app.load_error is None or app.loading:
            return
        try:
            model = self.store.get_conversation(conversation_id).model
        except Exception:  # noqa: BLE001 - view_stored has said what is wrong
            return
        if model and model != app.model:
            app.begin_loading(model)
            self.notify(f"Loading {model}, the model this chat used", markup=False)

    async def view_stored(self, conversation_id: int) -> None:
        """Show a stored conversation without a session (no model loaded, or its load failed);
        the session opens it once a model is ready."""
        try:
            conv = self.store.get_conversation(conversation_id)
            entries = stored_entries(self.store, conversation_id)
        except Exception as e:
            self.app.show_error(e, "Could not open the conversation")
            return
        self.viewing = conversation_id
        branches = [branch_of(self.store, e) for e in entries]  # `< 1/2 >` as once the model is loaded
        await self.chatlog.show(entries, system_prompt=conv.system_prompt, branches=branches)
        await self.refresh_sidebar()

    async def action_new_chat(self, system_prompt: str | None = None) -> None:
        if self._busy():
            return
        self.session.new(system_prompt)
        await self.show_session_chat()
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
            self.notify(f"New chat with preset {name!r}", markup=False)

    # -- rename, delete -------------------------------------------------------------------------

    def _target_id(self) -> int | None:
        """The chat highlighted in the sidebar, else the open one."""
        cid = self.sidebar.highlighted_id
        if cid is None:
            cid = self.session.conversation_id if self.session is not None else self.viewing
        return cid

    @work
    async def action_rename_chat(self) -> None:
        cid = self._target_id()
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
        cid = self._target_id()
        if cid is None:
            return self.notify("Nothing to delete: this chat is not saved yet", severity="warning")
        conv = self.store.get_conversation(cid)
        if not await self.app.push_screen_wait(ConfirmScreen(f"Delete “{conv.display_title}” and all its messages?")):
            return
        is_open = self.session is not None and self.session.conversation_id == cid
        if is_open and self.generating:
            return self.notify("Stop the reply first (Esc)", severity="warning")
        self.store.delete_conversation(cid)
        if is_open:
            self.session.new(None)
            await self.show_session_chat()
        else:
            if self.viewing == cid:
                self.viewing = None
                await self.chatlog.show([])
            await self.refresh_sidebar()
        self.notify(f"Deleted “{conv.display_title}”", markup=False)

    # -- showing the sidebar ---------------------------------------------------------------------

    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    def action_search(self) -> None:
        self._unhide_sidebar()
        if self.narrow:
            self.add_class("-sidebar-open")
        self.sidebar.search_box.focus()

    def action_toggle_sidebar(self) -> None:
        if self.narrow:
            self._unhide_sidebar()
            self.toggle_class("-sidebar-open")
            shown = self.has_class("-sidebar-open")
        elif self.sidebar.display:
            self.sidebar.display = False  # a wide terminal's hiding: a style of the widget's own
            shown = False
        else:
            self._unhide_sidebar()
            shown = True
        if shown:
            self.sidebar.list_view.focus()
        elif _inside(self.focused, self.sidebar):
            self.input.focus()  # the focus must not stay in a hidden widget

    def _unhide_sidebar(self) -> None:
        """Drop a wide terminal's hiding (a style of the widget's own): the sidebar then shows as
        the stylesheet says for the width. A style saying "shown" instead would outrank the
        stylesheet's hiding below NARROW columns: the sidebar stayed docked there."""
        self.sidebar.styles.clear_rule("display")
        self.sidebar.refresh(layout=True)

    def close_sidebar_overlay(self) -> None:
        if self.has_class("-sidebar-open"):
            self.remove_class("-sidebar-open")
            self.input.focus()


def _inside(node: Widget | None, container: Widget) -> bool:
    while node is not None:
        if node is container:
            return True
        node = node.parent  # type: ignore[assignment]
    return False
