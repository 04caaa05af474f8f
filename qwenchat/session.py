"""`ChatSession`: one conversation, where the engine and the history store meet.

Both `qwenchat ask` and the TUI talk to the model only through this class, so neither repeats
the other's logic. The session owns the message list (the active branch of the conversation
tree), the engine (with its KV cache) and the store handle.

Storage rules:
- Every write names its parent: a message goes after the session's own last message, never
  after whatever head the database holds at that moment (another window may have moved it).
- Before a turn the session re-reads the stored conversation (`sync`): if another process added
  to it, the session continues from what is stored, so the model sees those turns. If another
  process writes while a reply streams, the reply still goes under its own message: the
  conversation branches there, and the `Turn` says so.
- The user's message is committed before generation starts; the reply is committed as it
  grows (at most `reply_writer.SAVE_EVERY_S` behind, status "pending", with this process's id, so even a
  SIGKILL leaves the text so far, read back as "interrupted") and finally with its status.
- After a failure the entries are re-read from the store, so they never hold an unsaved message.

It knows nothing about terminals or widgets, and never touches tensors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qwenchat.engine.records import Chunk, GenerateOptions, Reply
from qwenchat.errors import ConversationChanged, StoreError
from qwenchat.reply_writer import ReplyWriter
from qwenchat.store.messages import UNCHECKED
from qwenchat.structured import instruction
from qwenchat.store.records import pid_alive
from qwenchat.session_records import (OPTION_FIELDS, SAMPLING_FIELDS, Entry, ModelInfo, Turn, branch_of, entry_of,
                                      options_dict, overlay)

if TYPE_CHECKING:
    from qwenchat.engine.chat import ChatEngine
    from qwenchat.store import Store
    from qwenchat.store.records import Conversation, Message

__all__ = ["ChatSession", "Entry", "ModelInfo", "Turn"]

# in a user message's meta while its own process answers it and has stored no reply yet: its pid
ANSWERING = "answering_pid"


class ChatSession:
    def __init__(
        self,
        engine: ChatEngine,
        store: "Store | None" = None,
        *,
        model_label: str | None = None,
        system_prompt: str | None = None,
        options: GenerateOptions | None = None,
        raw: bool = False,
    ) -> None:
        self.engine, self.store = engine, store
        self.model_label = model_label or engine.info.name
        self.system_prompt = system_prompt
        # what a new chat, or one without saved settings, starts from (flags > env > config)
        self.base_options = options or GenerateOptions()
        self.options = self.base_options
        self.raw = raw  # raw text continuation (base models), no chat template
        self.entries: list[Entry] = []
        self.conversation_id: int | None = None
        self._seen_head: int | None = None  # the stored head when this session last read or wrote
        self._conversation_model: str | None = None  # the model the stored conversation names
        self._cancel = threading.Event()

    # -- what faces show ----------------------------------------------------------------------

    @property
    def model_info(self) -> ModelInfo:
        info = self.engine.info
        quantize = getattr(info, "quantize", "none")
        return ModelInfo(
            label=self.model_label, device=info.device, dtype=info.dtype,
            precision=quantize if quantize not in (None, "none") else info.dtype,
            context_window=info.context_window, chat_tuned=info.chat_tuned,
            placement_reason=getattr(info, "placement_reason", ""),
            notes=tuple(getattr(info, "notes", ())), load_s=getattr(info, "load_s", 0.0),
            server=getattr(info, "server", None), exact_tokens=getattr(info, "exact_tokens", True),
        )

    def take_notes(self) -> list[str]:
        """What the engine has had to say since last asked, each said once (a remote server
        refused a setting, so it was left out of the request): the faces show these."""
        take = getattr(self.engine, "take_notes", None)  # a local engine has none to give
        return list(take()) if take is not None else []

    @property
    def defaults(self) -> GenerateOptions:
        """Every option a chat without saved settings uses: the session's base options (flags,
        environment, config file), then the model's generation_config."""
        model = self.engine.defaults
        filled = {k: getattr(model.sampling, k) for k in SAMPLING_FIELDS}
        filled["max_new_tokens"] = model.max_new_tokens
        return overlay(replace(self.base_options, **filled), self.base_options)

    @property
    def effective_options(self) -> GenerateOptions:
        """The options the next reply uses, every field filled."""
        return overlay(self.defaults, self.options)

    @property
    def is_greedy(self) -> bool:
        o = self.effective_options
        return o.temperature == 0 or o.top_k == 1

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as message material (for size checks before sending)."""
        return len(self.engine.tokenizer.encode_plain(text))

    def context_used(self) -> int:
        """Tokens the open conversation takes in the context window now (0 when empty)."""
        if not self.entries:
            return 0
        if self.raw:
            return len(self.engine.tokenizer.encode_plain(self._raw_prompt()))
        return len(self.engine.encode_chat(self.messages))

    # -- conversations ----------------------------------------------------------------------

    def load(self, conversation_id: int) -> "Conversation":
        """Continue a stored conversation: its system prompt, its own settings (the base
        options where it saved none) and its active branch."""
        store = self._need_store()
        conv = store.get_conversation(conversation_id)
        self.conversation_id = conv.id
        self._read(conv)
        return conv

    def new(self, system_prompt: str | None = None) -> None:
        """Start a fresh conversation (stored on the first message) from the base options."""
        self.conversation_id, self.entries, self.system_prompt = None, [], system_prompt
        self.options, self._seen_head = self.base_options, None

    def sync(self) -> bool:
        """Re-read the stored conversation; True when another process changed it (added to it,
        moved its branch, changed its system prompt, wrote more of, ended or continued its last
        reply) since this session last read or wrote it.
        `entries` and the system prompt then hold what is stored; the options stay as they are."""
        if self.store is None or self.conversation_id is None:
            return False
        conv = self.store.get_conversation(self.conversation_id)
        if conv.head_id == self._seen_head and conv.system_prompt == self.system_prompt and not self._last_moved_on():
            return False
        self._read(conv, options=False)
        return True

    def _last_moved_on(self) -> bool:
        """The store's copy of the last entry has changed since: a reply another window is writing
        grew or ended, or a stopped reply was continued there (its id stays, so the head does not
        move)."""
        last = self.entries[-1] if self.entries else None
        if last is None or last.id is None:
            return False
        stored = self.store.get_message(last.id)
        return (stored.status, stored.content) != (last.status, last.content)

    def answered_elsewhere(self) -> Entry | None:
        """The message at the end of this conversation's stored branch when another process is
        answering there right now (else None): its reply being written ("pending", its writer
        alive), or its user message, whose reply it has not stored yet. A message sent now would
        follow a reply that is not there yet, or a question not yet answered (`ask` waits)."""
        if self.store is None or self.conversation_id is None:
            return None
        thread = self.store.thread(self.conversation_id)
        last = thread[-1] if thread else None
        if last is None:
            return None
        if last.role == "assistant":  # "pending" only while its writer lives (store/records.py)
            busy = last.status == "pending" and last.meta.get("pid") != os.getpid()
        else:
            pid = last.meta.get(ANSWERING)
            busy = isinstance(pid, int) and pid != os.getpid() and pid_alive(pid)
        return entry_of(last) if busy else None

    def set_options(self, options: GenerateOptions) -> None:
        self.engine.settings(options)  # validates: a bad value never reaches generation
        self.options = options
        if self.store is not None and self.conversation_id is not None:
            stored = self.store.get_conversation(self.conversation_id).settings or {}
            other = {k: v for k, v in stored.items() if k not in OPTION_FIELDS}  # e.g. "source": "api"
            self.store.update_conversation(self.conversation_id, settings=other | options_dict(options))

    def set_system_prompt(self, text: str | None) -> None:
        self.system_prompt = text or None
        if self.store is not None and self.conversation_id is not None:
            self.store.update_conversation(self.conversation_id, system_prompt=self.system_prompt)

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation as the engine sees it: system prompt first, then the active branch (the
        last message followed by what a JSON reply must hold, with a constraint set)."""
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        # A reply stopped before its first word stays stored (the user stopped it), but shown to
        # the model it reads as an empty answer, a habit a small model picks up; the last entry
        # stays (F5 continues an empty reply as a fresh one).
        turns = [{"role": e.role, "content": e.content} for i, e in enumerate(self.entries)
                 if e.content or e.role != "assistant" or i == len(self.entries) - 1]
        constraint = self.options.constraint
        if constraint is not None and turns and turns[-1]["role"] == "user":
            # what to write, said after the question (the constraint holds the syntax only); not
            # stored, so the history and its titles hold what the user wrote
            turns[-1] = {"role": "user", "content": f"{turns[-1]['content']}\n\n{instruction(constraint)}"}
        return head + turns

    # -- branches ---------------------------------------------------------------------------

    def branch(self, index: int) -> tuple[int, int]:
        """(position from 1, count) of `entries[index]` among its alternatives (regenerations,
        edits); (1, 1) when it has none or nothing is stored."""
        return branch_of(self.store, self.entries[index])

    def switch_branch(self, index: int, step: int) -> None:
        """Make the previous (step -1) or next (+1) alternative of `entries[index]` the active
        branch, down to that branch's newest message; the store's head follows, so `ask -c` and
        a restart continue from it too."""
        store = self._need_store()
        entry = self.entries[index]
        if entry.id is None:
            raise StoreError("this message is not saved, so it has no alternatives")
        ids = [m.id for m in store.siblings(entry.id)]
        target = ids.index(entry.id) + step
        if not 0 <= target < len(ids):
            raise ValueError(f"no {'previous' if step < 0 else 'next'} alternative (this is {ids.index(entry.id) + 1} of {len(ids)})")
        leaf = store.latest_leaf(ids[target])
        store.set_head(self.conversation_id, leaf.id)
        self._read(store.get_conversation(self.conversation_id), options=False)

    # -- turns ------------------------------------------------------------------------------

    def send(self, text: str, *, anyway: bool = False) -> Iterator[Chunk | Turn]:
        """Add the user's message and stream the reply: `Chunk`s, then one `Turn`.

        The stored conversation is re-read first (another window may have added to it). If
        another window is answering at its end (`answered_elsewhere`), nothing is stored and
        `ConversationChanged` is raised: the caller waits for that reply and sends again
        (`anyway`: send after it all the same, for a writer that stalled). A caller's own check
        came before this re-read, and a question stored in between was answered twice, the second
        message under the first (a new-user run; two processes sending 40 times at once did it 2
        times). The prompt is built (and checked against the context window) before the message
        is committed, so a message that cannot be answered is refused without being stored."""
        self.sync()
        if not anyway and self.answered_elsewhere() is not None:
            raise ConversationChanged(self.conversation_id)
        return self._send_after(len(self.entries), text)

    def regenerate(self) -> Iterator[Chunk | Turn]:
        """Replace the last reply with a new one (the old one stays in the store's tree)."""
        self.sync()
        while self.entries and self.entries[-1].role == "assistant":
            self.entries.pop()
        if not self.entries:
            raise ValueError("there is no message to answer yet")
        self._check_saved(self.entries[-1])
        return self._guarded(lambda: self._stream(self._start()))

    def edit(self, index: int, text: str) -> Iterator[Chunk | Turn]:
        """Replace the user message at `index` in `entries` and answer again; later turns are
        dropped from the active branch (the old branch stays in the store)."""
        if not (0 <= index < len(self.entries)) or self.entries[index].role != "user":
            raise ValueError(f"entry {index} is not a user message")
        return self._send_after(index, text)

    def continue_reply(self) -> Iterator[Chunk | Turn]:
        """Extend the last reply (cut by the max-tokens limit, or interrupted): chunks carry the
        new text, the `Turn`'s reply the whole of it; the same stored message is updated."""
        self.sync()
        last = self.entries[-1] if self.entries else None
        if last is None or last.role != "assistant" or not last.content:
            raise ValueError("there is no reply to continue")
        self._check_saved(last)
        if last.status == "complete" and last.finish_reason not in ("length", None):
            raise ValueError("the last reply is complete; send a message instead")
        return self._guarded(lambda: self._stream(self._start(continue_last=True), continuing=last))

    def cancel(self) -> None:
        """Stop the reply in progress (from any thread) within one token."""
        self._cancel.set()

    def close(self) -> None:
        """Let go of what the engine holds open (a server's connections) when a face drops this
        session for another model; a local engine holds nothing that needs it."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def _send_after(self, index: int, text: str) -> Iterator[Chunk | Turn]:
        """Send `text` in place of entries[index:] (a new message when index == len)."""
        if index > 0:
            self._check_saved(self.entries[index - 1])
        parent = self.entries[index - 1].id if index > 0 else None
        kept = self.entries[index:]
        del self.entries[index:]
        self.entries.append(Entry("user", text))
        try:
            events = self._start()
        except BaseException:
            self.entries[-1:] = kept  # refused: as it was
            raise
        try:
            # only if nobody added to the conversation since it was read: two windows sending at
            # once would each have a reply answer both questions
            saved = self._save("user", text, parent, meta={ANSWERING: os.getpid()}, expect_head=self._seen_head)
        except BaseException:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            self._reread()  # what is stored: another window's message, or as it was
            raise
        if saved is not None:
            self.entries[-1] = entry_of(saved)
        return self._stream(events)

    def _start(self, continue_last: bool = False) -> Iterator[Chunk | Reply]:
        """Build the prompt and return the engine's event stream (errors surface here)."""
        self._cancel.clear()
        if self.raw:
            return self.engine.complete(self._raw_prompt(), self.options, self._cancel)
        if continue_last:
            return self.engine.chat(self.messages, self.options, self._cancel, continue_last=True)
        return self.engine.chat(self.messages, self.options, self._cancel)

    def _guarded(self, make: Any) -> Iterator[Chunk | Turn]:
        try:
            return make()
        except BaseException:
            self._reread()
            raise

    def _stream(self, events: Iterator[Chunk | Reply], continuing: Entry | None = None) -> Iterator[Chunk | Turn]:
        user_id = self.entries[-2].id if continuing else (self.entries[-1].id if self.entries else None)
        # this turn's own new message carries ANSWERING (see _send_after) until its reply is stored
        marked = user_id if not continuing and self.entries and ANSWERING in self.entries[-1].meta else None
        writer = ReplyWriter(self, user_id, continuing)
        done = False
        try:
            for event in events:
                if isinstance(event, Chunk):
                    writer.add(event.text)
                    yield event
                else:
                    event = writer.whole(event)
                    status = "interrupted" if event.finish_reason == "cancelled" else "complete"
                    text = writer.text if self.raw else event.text
                    msg_id, note = writer.finish(text, status, event)
                    done = True
                    self._not_answering(marked)
                    self._goes_on_with_this_model()
                    yield Turn(event, self.conversation_id, user_id, msg_id, note)
        except BaseException:
            # Ctrl+C, a closed generator or an engine failure mid-reply: keep what was said.
            if not done:
                if writer.has_text:
                    writer.finish(writer.text, "interrupted", None)
                    self._not_answering(marked)
                else:
                    self._not_answering(marked)
                    self._reread()
            raise

    def _goes_on_with_this_model(self) -> None:
        """A conversation continued on another model (`ask -c -m X`, a switch in the app) is
        stored as that model's: `-c` next time loads the model that answered last, not one that
        may be gone (a server that failed, an old download)."""
        if self.store is None or self.conversation_id is None or self._conversation_model == self.model_label:
            return
        try:
            self.store.update_conversation(self.conversation_id, model=self.model_label, touch=False)
            self._conversation_model = self.model_label
        except Exception:  # noqa: BLE001 - the reply is stored; the label is a convenience
            pass

    def _not_answering(self, user_id: int | None) -> None:
        """The turn's reply is stored (or none will be): other processes need not wait on the
        message any more, and its meta holds no process id for good."""
        if self.store is not None and user_id is not None:
            try:
                self.store.merge_meta(user_id, {ANSWERING: None})
            except Exception:  # noqa: BLE001 - the failure being raised matters more
                pass

    def _raw_prompt(self) -> str:
        return "".join(e.content for e in self.entries)

    # -- storage ----------------------------------------------------------------------------

    def _need_store(self) -> "Store":
        if self.store is None:
            raise StoreError("nothing is stored in this session (--no-save)")
        return self.store

    def _check_saved(self, entry: Entry) -> None:
        if self.store is not None and entry.id is None:
            raise StoreError("the previous message was not saved", "send it again")

    def _read(self, conv: "Conversation", options: bool = True) -> None:
        store = self._need_store()
        self.system_prompt = conv.system_prompt
        if options:
            self.options = self._saved_options(conv)
        self.entries = [entry_of(m) for m in store.thread(conv.id)]
        self._seen_head = conv.head_id
        self._conversation_model = conv.model

    def _reread(self) -> None:
        """After a failure: entries back to what is stored (never an unsaved message)."""
        if self.store is None:  # nothing is stored, so nothing is unsaved
            return
        if self.conversation_id is None:
            self.entries = [e for e in self.entries if e.id is not None]
            return
        try:
            self._read(self.store.get_conversation(self.conversation_id), options=False)
        except Exception:  # the store itself failed: drop what it does not hold
            self.entries = [e for e in self.entries if e.id is not None]

    def _saved_options(self, conv: "Conversation") -> GenerateOptions:
        saved = {k: v for k, v in (conv.settings or {}).items() if k in OPTION_FIELDS}
        try:
            return replace(self.base_options, **saved)
        except (TypeError, ValueError):  # settings saved by another version: the defaults then
            return self.base_options

    def _save(self, role: str, content: str, parent: int | None, status: str = "complete",
              meta: dict | None = None, reply: Reply | None = None, expect_head: Any = UNCHECKED) -> "Message | None":
        """Commit one message after `parent` (it becomes the stored head); `expect_head`: see
        `Store.add_message`."""
        if self.store is None:
            return None
        if self.conversation_id is None:
            conv = self.store.create_conversation(
                self.model_label, self.system_prompt, settings=options_dict(self.options)
            )
            self.conversation_id, self._conversation_model = conv.id, conv.model
            expect_head = UNCHECKED  # a new conversation: nobody else can have written to it
        counts = {}
        if reply is not None:
            counts = {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens}
        msg = self.store.add_message(self.conversation_id, role, content, parent_id=parent, status=status,
                                     meta=meta, expect_head=expect_head, **counts)
        self._seen_head = msg.id
        return msg
