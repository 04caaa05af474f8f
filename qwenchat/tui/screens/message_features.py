"""What the chat screen does with the messages it shows: redraw the conversation with its system
prompt, branch indicators and details; switch between branches; export the chat to a file;
attach a file to the message being written; copy one code block of a reply.

`MessageFeatures` is a base of `ChatScreen` (screens/chat.py), which provides `session`,
`store`, `chatlog`, `input`, `generating`, `_busy()`, `update_status()`, `mark_cut_replies()` and
`refresh_sidebar()`.
Its keys and palette entries are `FEATURE_BINDINGS` / `FEATURE_COMMANDS`, which ChatScreen lists
with its own (every key is modified: no single letter fires an action while the user types).
The work itself lives in torch- and textual-free modules: `qwenchat.attach`, `qwenchat.chat_export`.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from qwenchat import attach, chat_export
from qwenchat.errors import QwenchatError
from qwenchat.paths import user_path
from qwenchat.tui import messages as msg
from qwenchat.markdown import CodeBlock
from qwenchat.tui.screens.dialogs import DIALOG_CSS, ConfirmScreen, TextPrompt
from qwenchat.tui.widgets.chatlog import MessageView

FEATURE_BINDINGS = [
    Binding("alt+left", "branch(-1)", "Previous branch"),
    Binding("alt+right", "branch(1)", "Next branch"),
    Binding("ctrl+t", "attach_file", "Attach a file"),
    Binding("f9", "copy_code_block", "Copy a code block", show=False),
]
# palette entries without a key of their own: action -> (title, help)
FEATURE_COMMANDS = {
    "export('md')": ("Export chat as Markdown", "Write the current chat to a Markdown file"),
    "export('json')": ("Export chat as JSON", "Write the current chat, every branch included, to a JSON file"),
    "toggle_system_prompt": ("Fold or unfold the system prompt", "Show or hide the system prompt above the chat"),
}


class CodeBlockPicker(ModalScreen[int | None]):
    """Choose one of a reply's code blocks (labels are shown as plain text, never markup)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="CodeBlockPicker") + "CodeBlockPicker OptionList { height: auto; max-height: 20; }"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, blocks: list[CodeBlock]) -> None:
        super().__init__()
        self.blocks = blocks

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Copy which code block? (Enter copies, Esc cancels)", classes="title")
            yield OptionList(*[Option(f"{i + 1}. {b.label}", id=str(i)) for i, b in enumerate(self.blocks)],
                             markup=False, id="blocks")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))


class MessageFeatures(Screen[None]):
    # -- the conversation as shown ---------------------------------------------------------------

    def branches(self) -> list[tuple[int, int]]:
        """`session.branch(i)` for every entry (one store query each)."""
        try:
            return [self.session.branch(i) for i in range(len(self.session.entries))]
        except QwenchatError:  # the store went away: no indicators, no crash
            return []

    async def show_conversation(self) -> None:
        """Redraw the whole conversation: system prompt, messages, branches, details."""
        s = self.session
        if s is None:
            await self.chatlog.show([])
            return
        await self.chatlog.show(s.entries, system_prompt=s.system_prompt, branches=self.branches())
        self.mark_cut_replies()  # every way here (a branch switch too) keeps "✂ cut at N tokens"

    def annotate_messages(self) -> None:
        if self.session is not None:
            self.chatlog.annotate(self.session.entries, self.branches())

    @on(msg.ReplyDone)
    @on(msg.ReplyFailed)
    def _annotate_after_reply(self) -> None:
        # Runs after ChatScreen's own handlers (subclass first): the reply is in `entries` by now,
        # with its time and usage; a regeneration or edit just made a new branch.
        if not getattr(self, "quitting", False):
            self.annotate_messages()

    async def action_toggle_system_prompt(self) -> None:
        view = self.chatlog.system_prompt_view
        if view is None:
            self.notify("This chat has no system prompt (F4 sets one)", severity="warning")
        else:
            view.collapsed = not view.collapsed

    # -- branches --------------------------------------------------------------------------------

    def _focused_view(self) -> MessageView | None:
        node = self.focused
        while node is not None and not isinstance(node, MessageView):
            node = node.parent
        return node if node in self.chatlog.views else None

    def _focused_index(self) -> int | None:
        """The focused message's index in `session.entries` (None: none focused, or a bubble not
        (yet) in the session, such as a reply still streaming)."""
        view = self._focused_view()
        index = self.chatlog.views.index(view) if view is not None else None
        return index if index is not None and index < len(self.session.entries) else None

    def _branch_target(self) -> int | None:
        """The focused message, else the last message that has alternatives."""
        index = self._focused_index()
        if index is not None:
            return index
        for i in reversed(range(len(self.session.entries))):
            if self.session.branch(i)[1] > 1:
                return i
        return None

    async def action_branch(self, step: int) -> None:
        if self._busy() or await self.changed_elsewhere("switched", "Alt+Left/Right"):
            return
        index = self._branch_target()
        if index is None:
            self.notify("No message has other versions yet: regenerate a reply (Ctrl+R) or edit a message",
                        severity="warning", markup=False)
            return
        pos, count = self.session.branch(index)
        if count < 2:
            self.notify("This message has no other versions", severity="warning")
            return
        if not 1 <= pos + step <= count:
            self.notify(f"This is the {'first' if step < 0 else 'last'} version ({pos}/{count})")
            return
        try:
            self.session.switch_branch(index, step)
        except Exception as e:
            self.app.show_error(e, "Could not switch branch")
            return
        self.last_reply = None
        await self.show_conversation()
        self.update_status()
        await self.refresh_sidebar()
        views = self.chatlog.views
        if index < len(views):
            views[index].focus()
            self.chatlog.scroll_to_widget(views[index], animate=False, top=True)

    @on(MessageView.Action)
    async def _branch_from_view(self, event: MessageView.Action) -> None:
        # A click on a message's `< 2/3 >` (ChatScreen's own handler ignores these actions).
        if event.action in ("branch_prev", "branch_next"):
            event.view.focus()
            await self.action_branch(-1 if event.action == "branch_prev" else 1)

    # -- export ----------------------------------------------------------------------------------

    @work
    async def action_export(self, fmt: chat_export.Format = "md") -> None:
        cid = self.session.conversation_id if self.session is not None else None
        if cid is None:
            self.notify("Nothing to export yet: the chat is saved with its first message", severity="warning")
            return
        title = self.store.get_conversation(cid).title
        default = str(chat_export.default_path(cid, title, fmt))
        kind = "Markdown" if fmt == "md" else "JSON"
        path = default
        while True:  # a path that fails is asked again, as typed, to be fixed (or Esc)
            path = await self.app.push_screen_wait(TextPrompt(f"Export this chat as {kind} to:", path))
            if not path:
                return
            overwrite = False
            if user_path(path).is_file():
                overwrite = await self.app.push_screen_wait(ConfirmScreen(f"{path} exists. Overwrite it?", yes="Overwrite"))
                if not overwrite:
                    return
            try:
                written = chat_export.write_export(self.store, cid, path, fmt, overwrite=overwrite)
            except Exception as e:  # a write error is shown, never raised
                self.app.show_error(e, "Export failed")
                continue
            self.notify(f"Exported to {written}", markup=False)
            return

    # -- attach ----------------------------------------------------------------------------------

    @work
    async def action_attach_file(self) -> None:
        path = ""
        while True:  # as export: a path that fails is asked again, as typed (it was sent as a message)
            path = await self.app.push_screen_wait(TextPrompt("Attach a file (its path):", path))
            if not path or self.attach_path(path, self.input.text):
                break
        self.input.focus()

    def expand_file_command(self, text: str) -> bool:
        """`/file PATH` at the start of the input: put the file into the message box instead of
        sending (True: handled; the text stays in the box on an error)."""
        parsed = attach.parse_file_command(text)
        if parsed is None:
            return False
        path, rest = parsed
        if not path:
            self.notify("Give a path: /file PATH (or Ctrl+T)", severity="warning", markup=False)
            return True
        self.attach_path(path, rest)
        return True

    def attach_path(self, path: str, message: str) -> bool:
        """Read `path` into a fenced block after `message` in the input box, if it fits."""
        try:
            found = attach.read_attachment(path)
            if self.session is not None:
                info = self.session.model_info
                attach.check_fits(found, message, self.session.context_used(), info.context_window)
        except Exception as e:
            self.app.show_error(e, "Cannot attach the file")
            return False
        self.input.text = attach.insert_into(message, found)
        self.input.move_cursor(self.input.document.end)
        note = {"latin-1": " (not UTF-8: read as Latin-1)", "utf-16": " (UTF-16)"}.get(found.encoding, "")
        self.notify(f"Attached {found.name}, about {found.tokens:,} tokens{note}: Enter sends", markup=False)
        return True

    # -- copy a code block -----------------------------------------------------------------------

    def _code_source(self, view: MessageView | None) -> MessageView | None:
        """The given or focused message, else the last one that has a code block."""
        view = view or self._focused_view()
        if view is not None:
            return view
        return next((v for v in reversed(self.chatlog.views) if v.code_blocks()), None)

    def action_copy_code_block(self) -> None:
        self.copy_code_block(None)

    @work
    async def copy_code_block(self, view: MessageView | None) -> None:
        source = self._code_source(view)
        blocks = source.code_blocks() if source is not None else []  # a JSON reply: all of it
        if not blocks:
            self.notify("No code block to copy" + (" in this message" if source is not None else " yet"),
                        severity="warning")
            return
        choice = 0 if len(blocks) == 1 else await self.app.push_screen_wait(CodeBlockPicker(blocks))
        if choice is None:
            return
        self.app.copy_to_clipboard(blocks[choice].code)
        self.notify(f"Copied code block {choice + 1} of {len(blocks)} to the clipboard")
