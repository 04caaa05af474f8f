"""A message sent while another window (`qwenchat ask -c`, another app) is answering at the end of
the same chat: it waits in the box and goes once that reply has ended (qwenchat/other_window.py
says why, and when waiting gives up).

`WaitingForOtherWindow` is a base of `ChatScreen` (screens/chat.py), which provides `session`,
`input`, `chatlog` and `update_status()` (which says the message waits). While the message
waits, the other window's reply grows on screen too. The wait ends without sending when the user
presses Esc, changes the text in the box, or opens another chat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.timer import Timer

from qwenchat import other_window
from qwenchat.tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from qwenchat.session_records import Entry


class WaitingForOtherWindow:
    _waiting: tuple[other_window.OtherWindowWait, int | None, str, Timer] | None = None

    @property
    def waiting(self) -> bool:
        return self._waiting is not None

    def wait_for_other_window(self, text: str) -> None:
        """Keep `text` (in the box) until the reply being written elsewhere has ended."""
        self.stop_waiting()
        timer = self.set_interval(other_window.POLL_S, self._look_at_other_window)
        self._waiting = (other_window.OtherWindowWait(self.session), self.session.conversation_id, text, timer)
        self.update_status()
        self.notify("Another window is writing a reply at the end of this chat: yours is sent once it has "
                    "ended (Esc: don't wait)", title="Waiting", markup=False)

    def stop_waiting(self, why: str | None = None) -> None:
        if self._waiting is None:
            return
        self._waiting[3].stop()
        self._waiting = None
        self.update_status()
        if why:
            self.notify(why, markup=False)

    async def _look_at_other_window(self) -> None:
        if self._waiting is None:
            return
        wait, cid, text, _ = self._waiting
        if self.session is None or self.session.conversation_id != cid:
            return self.stop_waiting("Another chat is open: your message was not sent (it is in the box)")
        if self.input.text != text:
            return self.stop_waiting("The message changed while it waited: press Enter to send it")
        try:
            if (busy := wait.busy()) is not None:
                return await self._show_more_of(busy)
        except Exception as e:  # the store could not be read: say so, keep the text
            self.stop_waiting()
            self.app.show_error(e, "Could not read the conversation")
            return
        self.stop_waiting()
        if wait.stuck:
            self.notify(f"Nothing changed in the other window's reply for {other_window.STUCK_S:.0f} s: "
                        "sending yours now", markup=False)
        self.post_message(PromptInput.Submitted(text))  # not from here: this timer's task is stopped

    async def _show_more_of(self, busy: Entry) -> None:
        """The other window's reply grows on this screen too, while this message waits for it."""
        views = self.chatlog.views
        view = views[-1] if views else None
        if busy.role == "assistant" and view is not None and view.role == "assistant" and view.status == "pending" \
                and busy.content.startswith(view.text) and len(busy.content) > len(view.text):
            await view.append(busy.content[len(view.text):])
