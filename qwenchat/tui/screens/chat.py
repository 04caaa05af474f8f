"""The chat screen: sidebar, conversation, message box, status bar, and every chat action.

It reads the session and the store through the app (`self.app.session`, `self.app.store`); the
app owns loading the session and quitting. Widgets report upward with messages handled here.
Whole conversations (sidebar, open, rename, delete) are `ConversationActions`; what is done
with the shown messages (branches, export, attach, code blocks) is `MessageFeatures`; moving
around by keyboard is `ChatNavigation`; the settings dialogs are `ChatSettings`; the loading
panel is `ModelLoadingView`; regenerate, continue, edit and copy are `ReplyActions`; keeping up with
other windows on the same chat (following it while idle, a message waiting for their reply) is
`OtherWindows`.

Threads: every reply runs in a thread worker. Its chunks go into a `ReplyBuffer`; a timer on
the UI thread moves them into the reply's view `FLUSH_HZ` times a second (one paint each, of the
lines that changed: `widgets/reply.py`), so a fast model costs a bounded number of re-renders and the keyboard stays
responsive; while it streams, `GilHandoff` keeps the engine thread from waiting on the
renderer for the GIL (benchmarks/app_speed.py measures the app's decode against `ask`'s). The
chat log is anchored to its end while a reply streams, so it keeps following through a resize
until the user scrolls up. Ends of replies and failures come back as messages (`tui/messages.py`).
"""

from __future__ import annotations

from typing import Any

from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Footer, Label, LoadingIndicator, ProgressBar, Static

from qwenchat.errors import ConversationChanged
from qwenchat.structured import describe
from qwenchat.tui import draft
from qwenchat.tui import messages as msg
from qwenchat.tui.errors import error_text
from qwenchat.tui.screens.chat_settings import ChatSettings
from qwenchat.tui.screens.conversations import ConversationActions
from qwenchat.tui.screens.message_features import FEATURE_BINDINGS, FEATURE_COMMANDS, MessageFeatures
from qwenchat.tui.screens.model_loading import ModelLoadingView
from qwenchat.tui.screens.navigation import ChatNavigation
from qwenchat.tui.screens.reply_actions import ReplyActions
from qwenchat.tui.screens.other_windows import OtherWindows, added_news
from qwenchat.tui.streaming import GilHandoff, ReplyBuffer
from qwenchat.tui.widgets.chatlog import ChatLog, MessageView, reply_language
from qwenchat.tui.widgets.prompt_input import PromptInput
from qwenchat.tui.widgets.sidebar import Sidebar
from qwenchat.tui.widgets.statusbar import StatusBar, model_facts

TOO_SMALL = (40, 10)  # columns, rows: below this only a notice is shown


def cut_note(tokens: int | None, last: bool) -> str:
    where = f"cut at {tokens} tokens" if tokens else "cut at the token limit"
    return f"✂ {where}" + (" · F5 continues" if last else "")


class ChatScreen(ChatNavigation, ChatSettings, ConversationActions, MessageFeatures, ModelLoadingView, ReplyActions,
                 OtherWindows):
    FLUSH_HZ = 10  # reply updates a second: smooth to read; each costs a repaint of what changed
    STATUS_HZ = 2  # the status bar's live token count and rate: readable, and a repaint less per update
    # listed in help and in the palette
    ACTIONS = [
        Binding("escape", "stop", "Stop reply"),  # in the footer only while a reply streams
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("f5", "continue_reply", "Continue the reply"),
        Binding("ctrl+g", "edit_last", "Edit last message", show=False),
        Binding("ctrl+s", "settings", "Sampling"),
        Binding("f4", "system_prompt", "System prompt"),
        Binding("f2", "rename_chat", "Rename chat", show=False),
        Binding("f3", "delete_chat", "Delete chat", show=False),
        Binding("ctrl+f", "search", "Search chats", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Toggle sidebar", show=False),
        Binding("f8", "copy_reply", "Copy last reply", show=False),
        *FEATURE_BINDINGS,  # branches, attach, copy a code block (message_features.py)
    ]
    # Esc's other binding sits in the same list as "stop": a subclass's binding of a key replaces
    # its bases'. Moving around: ChatNavigation.BINDINGS.
    BINDINGS = [*ACTIONS, Binding("escape", "escape", show=False)]
    # palette entries without a key of their own: action -> (title, help)
    COMMANDS_EXTRA = {
        "clear_chat": ("Clear the screen: a new, empty chat", "The chat shown now stays in the sidebar (F3 deletes it)"),
        "new_chat_with_preset": ("New chat with preset", "Start a conversation with a saved system prompt"),
        **FEATURE_COMMANDS,
    }

    def __init__(self) -> None:
        super().__init__()
        self._generating = False
        self.quitting = False
        self.send_when_ready = False  # Enter pressed while the model loads: send it once loaded
        self.last_reply: Any = None
        self.buffer = ReplyBuffer()
        self.handoff = GilHandoff()
        self._reply_view: MessageView | None = None
        self._turn: tuple[str, tuple] = ("send", ())
        self._greedy_told = False  # ReplyActions: the regenerate note said
        self._ctx_start = 0
        self._ctx_after: int | None = None  # the meter after the last reply (set by its worker)
        self._focus_before_small: Widget | None = None  # what had focus when the notice hid it

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat"):
                yield Label("", id="mode-note")
                yield ChatLog(id="log")
                with Vertical(id="loading"):
                    yield Label("Loading model…", id="loading-label", markup=False)
                    yield Label("", id="loading-note", markup=False)
                    yield ProgressBar(id="download", show_eta=False)
                    yield LoadingIndicator()
                yield PromptInput(id="input")
        yield StatusBar(id="status")
        yield Footer()
        yield Static(f"The terminal is too small: make it at least {TOO_SMALL[0]}x{TOO_SMALL[1]}.",
                     id="too-small", markup=False)

    @property
    def generating(self) -> bool:
        return self._generating

    @generating.setter
    def generating(self, value: bool) -> None:
        if value != self._generating:
            self._generating = value
            self.refresh_bindings()  # Esc's footer entry (ChatNavigation.check_action)

    @property
    def session(self) -> Any:
        return self.app.session

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def chatlog(self) -> ChatLog:
        return self.query_one("#log", ChatLog)

    @property
    def input(self) -> PromptInput:
        return self.query_one("#input", PromptInput)

    async def on_mount(self) -> None:
        for hidden in ("#download", "#loading-note", "#mode-note"):
            self.query_one(hidden).display = False
        self._fit(self.app.size.width, self.app.size.height)
        await self.chatlog.show([])
        await self.refresh_sidebar()
        self.input.focus()
        if kept := draft.take():
            self.input.text = kept
            self.input.move_cursor(self.input.document.end)
            self.notify("Your unsent message from last time is back in the box", markup=False)
        self.set_interval(1 / self.FLUSH_HZ, self._drain_reply)
        self.follow_other_windows()
        cid = self.app.start_conversation
        if cid is None and self.app.continue_last:
            latest = self.store.latest_conversation()
            cid = latest.id if latest else None
        if cid is not None:  # readable at once, while the model loads
            await self.view_stored(cid)
        self.app.begin_loading(self.app.model)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        """Narrow: the sidebar hides (Ctrl+B shows it over the chat). Too small: a notice."""
        self.set_class(width < self.NARROW, "-narrow")
        if width >= self.NARROW:
            self.remove_class("-sidebar-open")  # the overlay is a narrow terminal's
        self.set_class(height < 24, "-short")
        too_small = width < TOO_SMALL[0] or height < TOO_SMALL[1]
        if too_small == self.has_class("-too-small"):
            return
        if too_small:  # hiding the widgets blurs them: keep what had focus for the way back
            self._focus_before_small = self.focused
        self.set_class(too_small, "-too-small")
        if not too_small:
            self.call_after_refresh(self._focus_again)

    def _focus_again(self) -> None:
        """Back from the too-small notice: focus where it was (typing went nowhere before)."""
        target, self._focus_before_small = self._focus_before_small, None
        if target is None or not target.is_mounted or not target.focusable:
            target = self.input
        target.focus()

    def update_status(self) -> None:
        s = self.session
        if s is None:
            return
        info = s.model_info
        facts = model_facts(info, note="completion mode" if s.raw else "", output=describe(s.options.constraint))
        r = self.last_reply
        if self.generating:
            facts.used = self._ctx_start + self.buffer.tokens
            facts.tokens, facts.tok_s = self.buffer.tokens, self.buffer.tok_s
            facts.note = "generating… (Esc stops)"
        elif r is not None:
            if getattr(info, "exact_tokens", True) or self._turn[0] == "continue_reply":
                # the conversation as the next prompt will hold it (its template's closing tokens
                # too), as reopening the chat counts it; a continued reply counted once
                facts.used = self._ctx_after
            else:
                facts.used = r.usage.prompt_tokens + r.usage.completion_tokens
                facts.estimated = False  # the server's own counts
            facts.cached, facts.ttft = r.usage.cached_tokens, r.timings.ttft_s
            facts.tokens, facts.tok_s = r.usage.completion_tokens, r.timings.decode_tok_s
        else:
            facts.used = self._context_used()
        if self.waiting:
            facts.note = "your message waits for another window's reply (Esc: don't wait)"
        self.query_one(StatusBar).show_facts(facts)

    def _context_used(self) -> int | None:
        try:
            return self.session.context_used()
        except Exception:  # a template that cannot render: the meter is not worth a crash
            return None

    def _busy(self) -> bool:
        if self._no_session():
            return True
        if self.generating:
            self.notify("A reply is in progress: Esc stops it", severity="warning")
            return True
        return False

    def _no_session(self) -> bool:
        """True (and the user told why: loading, or the load failed and how to fix it) when
        there is no session to act on."""
        if self.session is None:
            error = self.app.load_error
            if error is None:
                self.notify("The model is still loading", severity="warning")
            else:
                message, hint = error_text(error)
                self.notify(f"{message}\nFix: {hint or 'pick another model with Ctrl+O'}",
                            title=f"No model: loading {self.app.model or 'the model'} failed",
                            severity="error", timeout=10, markup=False)
            return True
        return False

    def mark_cut_replies(self) -> None:
        """Mark replies that the max-tokens limit cut (the last one can be continued)."""
        if self.session is None:
            return
        entries, views = self.session.entries, self.chatlog.views
        for i, (entry, view) in enumerate(zip(entries, views)):
            if entry.role == "assistant" and entry.finish_reason == "length" and entry.status == "complete":
                tokens = (entry.meta.get("usage") or {}).get("completion_tokens")
                view.set_status(entry.status, cut_note(tokens, i == len(entries) - 1))

    # -- turns -----------------------------------------------------------------------------

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if self.expand_file_command(event.text):  # /file PATH: into the box, not sent
            return
        if self.session is None and self.app.load_error is None:
            # a first message typed while the model loads: it waits in the box and goes then
            self.send_when_ready = True
            self.notify("The model is still loading: your message will be sent when it is ready")
            return
        if self._busy():
            return
        # busy from here: Ctrl+N or a chat picked now (keys run on the app's task) must wait
        self.generating = True
        try:
            await self.sync_conversation()
            if self.session.answered_elsewhere() is not None:  # its reply would follow a question
                self.generating = False
                self.wait_for_other_window(event.text)
                return
            self.stop_waiting()
            self.input.take_sent(event.text)
            text = event.text.rstrip()  # the blank line an attached file leaves for typing on says nothing
            await self.chatlog.add("user", text)
        except BaseException:
            self.generating = False
            raise
        await self._start("send", text)

    async def sync_conversation(self, then: str = "") -> bool:
        """Show what another window (`qwenchat ask --cid N`) added to this chat before acting on
        it; True when it had changed. `then`: said after the news (what the user should do now)."""
        before = len(self.session.entries)
        try:
            changed = self.session.sync()
        except Exception as e:
            self.app.show_error(e, "Could not re-read the conversation")
            return False
        if not changed:
            return False
        await self.show_as_stored()
        added = len(self.session.entries) - before
        self.tell_updated(added_news(added) if added > 0 else
                          "This chat was changed in another window: showing what is stored now", then)
        return True

    def tell_updated(self, news: str, then: str = "") -> None:
        self.notify(f"{news}. {then}" if then else news, title="Conversation updated", markup=False)

    async def changed_elsewhere(self, what: str, key: str) -> bool:
        """Before acting on the messages shown (regenerate, continue, edit, switch a branch): if
        another window changed the chat, it is shown as stored and nothing is done (the action
        would have hit a message other than the one the user saw)."""
        return await self.sync_conversation(then=f"Nothing was {what}: {key} again acts on what is shown now")

    async def _start(self, verb: str, *args: Any, view: MessageView | None = None) -> None:
        self.generating = True
        self._ctx_start = self._context_used() or 0  # until the worker has built the new prompt
        self.buffer.reset()
        self._streaming(True)
        self._turn = (verb, args)
        language = reply_language(self.session.options.constraint)  # as its stored settings will say
        if view is not None:
            view.set_language(language)
        self._reply_view = view or await self.chatlog.add("assistant", "", "pending", language)
        self.chatlog.anchor()  # follow the reply, through resizes, until the user scrolls up
        self.update_status()
        self._run_turn(verb, args)

    def _streaming(self, on: bool) -> None:
        """While a reply streams the UI thread's every millisecond is taken from a decode step
        (two cores): the engine thread gets the GIL back at once (`GilHandoff`), and the message
        box's cursor holds still, as its blinking cost two extra repaints a second (measured, app
        against `ask`: BENCHMARKS.md, sixteenth session)."""
        if on:
            self.handoff.start()
        else:
            self.handoff.stop()
        self.input.cursor_blink = not on

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _run_turn(self, verb: str, args: tuple) -> None:
        try:
            events = getattr(self.session, verb)(*args)
            # the prompt is built (the new message in, a regenerated reply out): the meter grows from here
            self._ctx_start = self._context_used() or 0
            self.post_message(msg.TurnStored())
            for event in events:
                if hasattr(event, "reply"):  # the Turn that ends the stream
                    self._ctx_after = self._context_used()  # here, off the UI thread
                    self.post_message(msg.ReplyDone(event))
                else:
                    self.buffer.add(event.text)
        except BaseException as e:  # noqa: BLE001 - reported, the app keeps running
            self.post_message(msg.ReplyFailed(e))

    async def _drain_reply(self) -> None:
        """Move the streamed text buffered by the worker into the reply's view.
        (Not named `_flush`: that name is Textual's own, on App.)"""
        if self.quitting:
            return
        text = self.buffer.take()
        if text and self._reply_view is not None:
            with self.app.batch_update():  # the new text and the status bar in one frame
                await self._reply_view.append(text)
                if self.buffer.updates % (self.FLUSH_HZ // self.STATUS_HZ) == 1:
                    self.update_status()

    async def on_turn_stored(self, _: msg.TurnStored) -> None:
        # a new chat is listed (and highlighted) as its reply begins; an older one moves to the top
        ids = self.sidebar.conversation_ids
        if not self.quitting and (not ids or ids[0] != self.session.conversation_id):
            await self.refresh_sidebar()

    async def on_reply_done(self, event: msg.ReplyDone) -> None:
        if self.quitting:
            return
        self._streaming(False)
        await self._drain_reply()
        reply = event.turn.reply
        if self._reply_view is not None:
            self._reply_view.set_status("interrupted" if reply.finish_reason == "cancelled" else "complete")
        self._reply_view, self.generating, self.last_reply = None, False, reply
        self.mark_cut_replies()
        if event.turn.note:
            self.notify(event.turn.note, markup=False)
        if getattr(reply, "dropped_messages", 0):
            self.notify(f"{reply.dropped_messages} older messages were left out to fit the context window")
        self.update_status()
        await self.refresh_sidebar()

    async def on_reply_failed(self, event: msg.ReplyFailed) -> None:
        if self.quitting:
            return
        self._streaming(False)
        await self._drain_reply()
        view, self._reply_view, self.generating = self._reply_view, None, False
        self.last_reply = None  # the status bar must not show the previous reply's numbers as this one's
        if view is not None and view.text:
            view.set_status("interrupted")
        verb, args = self._turn
        if verb in ("send", "edit") or view is None or not view.text:
            # show what is stored: a refused message (never stored) leaves no bubble behind
            await self.show_conversation()
        if verb in ("send", "edit") and not self._stored(args[-1]):
            self._give_back(args[-1])
            if isinstance(event.error, ConversationChanged) and verb == "send" and self.input.text == args[-1]:
                # another window stored its message first: this one follows that turn
                await self.on_prompt_input_submitted(PromptInput.Submitted(args[-1]))
                return
        self.app.show_error(event.error, "Generation failed")
        self.update_status()
        await self.refresh_sidebar()

    def _stored(self, text: str) -> bool:
        return any(e.role == "user" and e.content == text and e.id is not None
                   for e in self.session.entries[-2:])

    def _give_back(self, text: str) -> None:
        """A message that was not stored goes back into the box, so nothing typed is lost."""
        typed = self.input.text
        self.input.text = text if not typed.strip() else f"{text}\n{typed}"
        self.input.move_cursor(self.input.document.end)
        self.input.focus()
