"""The message box: a multi-line TextArea where Enter sends and Ctrl+J / Shift+Enter break the
line. It stays editable while a reply streams; the app decides whether a send is accepted.

Keys arriving in one burst (a paste of keystrokes, a laggy SSH link) keep their order, as in every
text field of the app ("hello", Backspace, "p me" gave "hellop m"; widgets/text_fields.py says
why). Text typed after Enter, before the send was taken, stays in the box (`take_sent`)."""

from __future__ import annotations

import os

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from qwenchat.tui.widgets.text_fields import KeysInOrder


TAB_WIDTH = 4  # columns a tab takes in the box, and in the message once sent (chatlog.py)


class PromptInput(KeysInOrder, TextArea):
    DEFAULT_CSS = """
    PromptInput { height: auto; min-height: 3; max-height: 10; border: round $border-blurred; }
    PromptInput:focus { border: round $border; }
    """

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.indent_width = TAB_WIDTH  # how wide a pasted tab is drawn
        self.placeholder = "Type a message: Enter sends, Ctrl+J starts a new line"

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key in ("ctrl+j", "shift+enter", "newline"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
        # any other key: Textual goes on to KeysInOrder's handler (the bindings), then TextArea's

    def submit(self) -> None:
        """What Enter does: send the text, if there is any."""
        if self.text.strip():
            self.post_message(self.Submitted(self.text))

    def take_sent(self, sent: str) -> None:
        """Empty the box of a message that was sent, keeping what was typed after Enter: the box
        now holds `sent` with that typing inserted where the cursor was."""
        text = self.text
        head = len(os.path.commonprefix([sent, text]))
        tail = len(os.path.commonprefix([sent[head:][::-1], text[head:][::-1]]))
        self.text = text[head : len(text) - tail] if head + tail == len(sent) else ""
        self.move_cursor(self.document.end)
