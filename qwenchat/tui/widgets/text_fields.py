"""The app's text fields: every place the user types is one of these (or PromptInput, the message
box, which shares their key handling), never a bare Textual `Input` or `TextArea`.

Keys arriving in one burst (a fast typist, a paste of keystrokes, a laggy SSH link) keep their
order. Textual runs a widget's key bindings (Backspace, Delete, the arrows, Home/End, Ctrl+W,
Ctrl+U...) only after the key has bubbled up to the app, while the widget types a printable key
at once; so a letter behind a Backspace in the same burst was typed first and then deleted
(40 Backspaces then "name, year int" in the sampling dialog gave "name, yt"). A field here runs
its own bindings as their keys arrive, moves the focus on Tab at once, and hands a key that was
queued behind a focus change to the widget that has the focus now. Priority bindings (the app's
and the screen's) still come first: Textual checks them before the key reaches the field. A binding whose action steps aside
(Ctrl+C with nothing selected) lets the key go on to the screen and the app, as before."""

from __future__ import annotations

from textual import events
from textual.widget import Widget
from textual.widgets import Input, TextArea


FOCUS_KEYS = {"tab": "focus_next", "shift+tab": "focus_previous"}


def hand_on(event: events.Key, target: Widget) -> None:
    """Send `target` the key `event` is, as if it had been typed there."""
    target.post_message(events.Key(event.key, event.character))


class KeysInOrder:
    """Mixin for a Textual text widget: its own key bindings run when their key arrives."""

    async def _on_key(self, event: events.Key) -> None:
        # No super() call: Textual calls `_on_key` of every class in the MRO itself (Input's, then
        # Widget's) until a handler prevents the default, as a run binding does here.
        if self._passed_on(event) or self._moved_focus(event) or (
                not event.is_printable and await self._run_own_binding(event.key)):
            event.stop()
            event.prevent_default()

    def _passed_on(self, event: events.Key) -> bool:
        """A key queued here before a key ahead of it in the burst (Tab, Enter in a dialog) moved
        the focus away goes where the focus is now: "0.5", Tab, "0.9" typed 0.50.9 in one field."""
        target = self.app.focused
        if target is None or target is self:
            return False
        hand_on(event, target)
        return True

    def _moved_focus(self, event: events.Key) -> bool:
        """Tab and Shift+Tab move the focus at once (the screen's binding ran only once the key
        had bubbled up to the app, after the keys queued behind it were typed here)."""
        action = FOCUS_KEYS.get(event.key)
        if action is None or getattr(self, "tab_behavior", "focus") != "focus":
            return False
        getattr(self.screen, action)()
        return True

    async def _run_own_binding(self, key: str) -> bool:
        """Run this widget's binding for `key` as Textual would at the app; False if none ran."""
        for binding in self._bindings.key_to_bindings.get(key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                return True
        return False


class LineInput(KeysInOrder, Input):
    """A one-line field (dialog fields, the chat search): Textual's Input, keys in order."""


class TextEditor(KeysInOrder, TextArea):
    """A multi-line editor (the system prompt): Textual's TextArea, keys in order."""
