"""Moving around the chat from the keyboard: Esc stops a reply or goes back to the message box,
Ctrl+C stops a reply, PageUp/PageDown/Home/End scroll the chat from the box, Alt+Up/Alt+Down (and
Up/Down on a focused message) go from message to message.

`ChatNavigation` is a base of `ChatScreen` (screens/chat.py), which provides `session`,
`chatlog`, `input`, `sidebar`, `generating`, `_focused_index()`, `clear_search()` and
`close_sidebar_overlay()`. Keys that only make sense in one place (PageUp in the message box, Up
on a message) are priority bindings that step aside (SkipAction) everywhere else.
"""

from __future__ import annotations

from textual import events
from textual.actions import SkipAction
from textual.binding import Binding
from textual.screen import Screen


class ChatNavigation(Screen[None]):
    # help lists these with the message box's own keys (screens/help.py EXTRA_KEYS)
    BINDINGS = [
        Binding("ctrl+c", "interrupt", show=False, priority=True),
        Binding("pageup", "scroll_chat('page_up')", show=False, priority=True),
        Binding("pagedown", "scroll_chat('page_down')", show=False, priority=True),
        Binding("home", "scroll_chat('home', True)", show=False, priority=True),
        Binding("end", "scroll_chat('end', True)", show=False, priority=True),
        Binding("ctrl+home", "scroll_chat('home', False, True)", show=False, priority=True),
        Binding("ctrl+end", "scroll_chat('end', False, True)", show=False, priority=True),
        Binding("alt+up", "focus_message(-1)", show=False),
        Binding("alt+down", "focus_message(1)", show=False),
        Binding("up", "step_message(-1)", show=False, priority=True),
        Binding("down", "step_message(1)", show=False, priority=True),
    ]

    def on_key(self, event: events.Key) -> None:
        """Text typed where it cannot go goes into the message box, where the user believes they
        are typing: on a focused message or the chat (after Alt+Up, a branch switch or the edit
        dialog the letters used to vanish), on the sidebar's chat list (Tab lands there), and
        while the too-small notice hides the box (Backspace too there; Enter and the rest wait
        for the window to grow)."""
        hidden = self.has_class("-too-small")
        # The box takes letters and Enter itself: here they were sent to the widget focused
        # before the first of a burst moved the focus to the box, so they follow it there, at
        # once and in order (handed on through the app, the letters came after the Enter).
        behind = self.focused is self.input and not hidden
        if not (hidden or behind or self._typing_astray()):
            return
        if event.is_printable and event.character:
            self._into_box(event.character, hidden)
        elif hidden and event.key == "backspace":
            self.input.action_delete_left()
        elif behind and event.key == "enter":
            self.input.submit()
        else:
            return
        event.stop()
        event.prevent_default()

    def on_paste(self, event: events.Paste) -> None:
        """A paste where text cannot go goes into the message box too (one on the list was lost)."""
        if event.text and self._typing_astray():
            event.stop()
            self._into_box(event.text, hidden=False)

    def _typing_astray(self) -> bool:
        f = self.focused
        return f is not None and (f is self.chatlog or f.parent is self.chatlog or f is self.sidebar.list_view)

    def _into_box(self, text: str, hidden: bool) -> None:
        if not hidden:  # a hidden box cannot take the focus; it gets it back with the window
            self.close_sidebar_overlay()
            self.set_focus(self.input)  # at once: Widget.focus() waits, and the burst's next keys went astray
        self.input.insert(text)

    def action_stop(self) -> None:
        if self.generating and self.session is not None:
            self.session.cancel()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc is "stop" while a reply streams and "escape" otherwise, so the footer offers "Stop
        reply" only when there is one to stop (it showed it on an idle chat)."""
        if action == "stop":
            return self.generating
        if action == "escape":
            return not self.generating
        return True

    async def action_escape(self) -> None:
        """Stop a message's wait for another window; back to the message box (clearing a
        search)."""
        if self.waiting:
            self.stop_waiting("Not waiting for the other window: your message is in the box")
        if self.focused is self.sidebar.search_box:
            await self.clear_search()
        self.close_sidebar_overlay()
        self.input.focus()

    def action_interrupt(self) -> None:
        """Ctrl+C stops a streaming reply, copies selected text, or else says how to quit (in the
        message box, where the cursor usually is, it did nothing at all: found hands-on)."""
        if self.generating:
            return self.action_stop()
        selected = getattr(self.focused, "selected_text", None) or self.get_selected_text()
        if selected:
            raise SkipAction()  # the focused box's or the screen's copy takes it
        self.app.action_help_quit()

    def action_scroll_chat(self, where: str, only_if_empty: bool = False, anywhere: bool = False) -> None:
        if not anywhere and (self.focused is not self.input or (only_if_empty and self.input.text)):
            raise SkipAction()
        log = self.chatlog
        {"page_up": log.scroll_page_up, "page_down": log.scroll_page_down,
         "home": log.scroll_home, "end": log.scroll_end}[where](animate=False)

    def action_focus_message(self, step: int) -> None:
        views = self.chatlog.views
        index = self._focused_index()
        if index is None:
            target = len(views) - 1 if step < 0 else None
        else:
            target = index + step
        if target is None or not 0 <= target < len(views):
            if index is not None and target is not None and target >= len(views):
                self.input.focus()  # past the last message: back to the box
            return
        views[target].focus()
        self.chatlog.scroll_to_widget(views[target], animate=False)

    def action_step_message(self, step: int) -> None:
        if self._focused_index() is None:
            raise SkipAction()
        self.action_focus_message(step)
