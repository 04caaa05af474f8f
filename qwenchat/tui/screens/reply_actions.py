"""What the user does to the replies on the chat screen: regenerate the last one, continue one the
token limit cut or Esc stopped, edit a message and answer it again, copy a message or the last
reply.

`ReplyActions` is a base of `ChatScreen` (screens/chat.py), which provides `session`, `chatlog`,
`_busy()`, `changed_elsewhere()` (another window changed the chat: shown, nothing done), `_start()`
(a turn in a worker) and `copy_code_block()` (MessageFeatures). Its keys are
listed in ChatScreen.ACTIONS with the others.
"""

from __future__ import annotations

from textual import work

from qwenchat.tui.screens.dialogs import EditMessageScreen
from qwenchat.tui.widgets.chatlog import MessageView

GREEDY_NOTE = "Greedy settings give the same reply word for word: raise the temperature with Ctrl+S for a different one"
SEEDED_NOTE = "A fixed seed gives the same reply word for word: clear the seed with Ctrl+S for a different one"


class ReplyActions:
    async def action_regenerate(self) -> None:
        if self._busy() or await self.changed_elsewhere("regenerated", "Ctrl+R"):
            return
        entries = self.session.entries
        n = len(entries)
        while n and entries[n - 1].role == "assistant":
            n -= 1
        if n == 0:
            self.notify("Nothing to regenerate yet", severity="warning")
            return
        same = GREEDY_NOTE if self.session.is_greedy else (
            SEEDED_NOTE if self.session.effective_options.seed is not None else None)
        if same and not self._greedy_told:  # said once: the user knows from then on
            self._greedy_told = True
            self.notify(same, title="Regenerate", timeout=8)
        await self.chatlog.truncate(n)
        await self._start("regenerate")

    async def action_continue_reply(self) -> None:
        if self._busy() or await self.changed_elsewhere("continued", "F5"):
            return
        entries, views = self.session.entries, self.chatlog.views
        last = entries[-1] if entries else None
        if (last is None or last.role != "assistant" or not views or views[-1].role != "assistant"
                or not (last.finish_reason == "length" or last.status == "interrupted")):
            self.notify("Nothing to continue: only a reply cut at the token limit or stopped can go on",
                        severity="warning")
            return
        views[-1].set_status("pending")
        views[-1].set_details("")  # the first part's figures: the whole reply's come when it ends
        await self._start("continue_reply", view=views[-1])

    async def edit_message(self, index: int) -> None:
        if self._busy() or await self.changed_elsewhere("edited", "Ctrl+G"):
            return
        entries = self.session.entries
        while 0 <= index < len(entries) and entries[index].role == "assistant":
            index -= 1  # a reply: edit the message it answers
        if not (0 <= index < len(entries)) or entries[index].role != "user":
            self.notify("Only your own messages can be edited", severity="warning")
            return
        self._edit_worker(index, entries[index].content)

    @work
    async def _edit_worker(self, index: int, text: str) -> None:
        new = await self.app.push_screen_wait(EditMessageScreen(text))
        if new is None or self._busy():
            return
        await self.chatlog.truncate(index)
        await self.chatlog.add("user", new)
        await self._start("edit", index, new)

    async def action_edit_last(self) -> None:
        if self.session is None:
            return
        users = [i for i, e in enumerate(self.session.entries) if e.role == "user"]
        if not users:
            self.notify("No message to edit yet", severity="warning")
            return
        await self.edit_message(users[-1])

    async def on_message_view_action(self, event: MessageView.Action) -> None:
        views = self.chatlog.views
        if event.action == "copy":
            self._copy(event.view.text, "message")
        elif event.action == "copy_code":
            self.copy_code_block(event.view)
        elif event.action == "edit" and event.view in views:
            await self.edit_message(views.index(event.view))

    def _copy(self, text: str, what: str) -> None:
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied the {what} to the clipboard")

    def action_copy_reply(self) -> None:
        text = next((v.text for v in reversed(self.chatlog.views) if v.role == "assistant" and v.text), None)
        if text is None:
            self.notify("No reply to copy yet", severity="warning")
        else:
            self._copy(text, "reply")
