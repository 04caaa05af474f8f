"""Keeping up with other windows on the same chat (`qwenchat ask -c`, another app).

- Following: while the chat sits idle at its end (the cursor in the message box, no dialog, not
  scrolled up), it is looked at every FOLLOW_S: another window's reply grows here as it is
  written, and new messages appear (with a note), so what the user acts on is what is stored.
- Waiting: a message sent while another window is answering at the end of the chat waits in the
  box and goes once that reply has ended (qwenchat/other_window.py says why, and when waiting
  gives up). The wait ends without sending when the user presses Esc, changes the text in the
  box, or opens another chat.

`OtherWindows` is a base of `ChatScreen` (screens/chat.py), which provides `session`, `store`,
`input`, `chatlog`, `generating`, `quitting`, `tell_updated()`, `refresh_sidebar()` and
`update_status()` (which says the message waits). Chats other windows made or changed show in the
sidebar within FOLLOW_S, whatever is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.timer import Timer

from qwenchat import other_window
from qwenchat.tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from qwenchat.session_records import Entry


FOLLOW_S = 1.0  # an idle chat looks for other windows' changes this often (one small read)


def added_news(added: int) -> str:
    return f"{added} new message{'s' if added != 1 else ''} from another window"


class OtherWindows:
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

    async def show_as_stored(self) -> None:
        """The chat as another window left it; the status bar drops this window's last reply's
        figures (they are not the chat's now) and counts the chat as it stands."""
        await self.show_conversation()
        self.last_reply = None
        self.update_status()

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

    async def _show_more_of(self, busy: Entry) -> bool:
        """Another window's reply being written at the end: its new text is added to its view
        here (True), if that view is the last one shown and holds the start of it."""
        views = self.chatlog.views
        view = views[-1] if views else None
        if busy.role != "assistant" or busy.status != "pending" or view is None or view.role != "assistant" \
                or view.status != "pending" or not busy.content.startswith(view.text):
            return False
        if len(busy.content) > len(view.text):
            await view.append(busy.content[len(view.text):])
        return True

    def follow_other_windows(self) -> None:
        self._list_version: int | None = None
        self.set_interval(FOLLOW_S, self._follow)

    async def _follow(self) -> None:
        await self._follow_list()
        if not self._idle_at_the_end():
            return
        s = self.session
        ids = [e.id for e in s.entries]
        try:
            changed = s.sync()
        except Exception:  # noqa: BLE001 - the next action on the chat says what is wrong
            return
        if not changed:
            return
        last = s.entries[-1] if s.entries else None
        if last is not None and [e.id for e in s.entries] == ids and await self._show_more_of(last):
            return  # the same reply, grown
        await self.show_as_stored()
        added = len(s.entries) - len(ids) - (last is not None and last.status == "pending")  # that shows itself
        if added > 0:
            self.tell_updated(added_news(added))

    async def _follow_list(self) -> None:
        """Chats another window made, answered or renamed show in the sidebar (they appeared
        only after the next reply here)."""
        if self.generating or self.quitting:  # the sidebar is refreshed when the reply ends
            return
        try:
            version = self.store.others_version()
        except Exception:  # noqa: BLE001 - the next action on the store says what is wrong
            return
        if self._list_version is not None and version != self._list_version:
            await self.refresh_sidebar()
        self._list_version = version

    def _idle_at_the_end(self) -> bool:
        """Nothing the user is doing would be disturbed by a redraw of the chat."""
        log = self.chatlog
        scrolled_up = 0 < log.max_scroll_y and log.scroll_y < log.max_scroll_y - 1  # (a short chat's scroll_y < 0)
        return (self.session is not None and self.session.conversation_id is not None and not self.generating
                and not self.quitting and self._waiting is None and self.app.screen is self
                and self.focused is self.input and not scrolled_up)
