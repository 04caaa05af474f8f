"""`ReplyWriter`: stores a streaming reply as it grows and when it ends, under its own user
message (the storage rules are in session.py's docstring). It works on its session's store
and bookkeeping (`_save`, `_seen_head`): it is that class's helper, apart only for size."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from qwenchat.engine.records import Reply
from qwenchat.session_records import Entry, entry_of, options_dict

if TYPE_CHECKING:
    from qwenchat.session import ChatSession

SAVE_EVERY_S = 1.0  # how far behind the stored text of a streaming reply may be


class ReplyWriter:
    """Stores a streaming reply as it grows and when it ends, under its own user message."""

    def __init__(self, session: ChatSession, parent: int | None, continuing: Entry | None) -> None:
        self.session, self.parent, self.continuing = session, parent, continuing
        self.prefix = continuing.content if continuing else ""
        self.parts: list[str] = []
        self.msg_id = continuing.id if continuing else None
        self.saved_at = time.monotonic()
        self.moved = False  # another process moved the stored head while this reply streamed
        self.reopened = False

    @property
    def text(self) -> str:
        return self.prefix + "".join(self.parts)

    @property
    def has_text(self) -> bool:
        return bool(self.parts)

    def add(self, piece: str) -> None:
        self.parts.append(piece)
        store = self.session.store
        if store is None or time.monotonic() - self.saved_at < SAVE_EVERY_S:
            return
        self.saved_at = time.monotonic()
        if self.msg_id is None:
            self._check_head()
            self.msg_id = self.session._save("assistant", self.text, self.parent, "pending",
                                             {"pid": os.getpid()}).id
        else:
            if self.continuing is not None and not self.reopened:
                store.reopen_message(self.msg_id, {"pid": os.getpid()})  # pending again until it ends
                self.reopened = True
            store.save_partial(self.msg_id, self.text)

    def whole(self, reply: Reply) -> Reply:
        """A continued reply as a whole: all its text, and the tokens of every turn that wrote it."""
        if self.continuing is None:
            return reply
        before = (self.continuing.meta.get("usage") or {}).get("completion_tokens") or 0
        usage = replace(reply.usage, completion_tokens=reply.usage.completion_tokens + before)
        return replace(reply, text=self.text, usage=usage)

    def finish(self, text: str, status: str, reply: Reply | None) -> tuple[int | None, str | None]:
        s = self.session
        meta = reply_meta(s, reply)
        if s.store is not None:
            if self.msg_id is None:
                self._check_head()
                self.msg_id = s._save("assistant", text, self.parent, status, meta, reply).id
            else:
                counts = {}
                if reply is not None:
                    counts = {"prompt_tokens": reply.usage.prompt_tokens,
                              "completion_tokens": reply.usage.completion_tokens}
                s.store.finish_message(self.msg_id, content=text, status=status, meta=meta, **counts)
                if self.continuing is not None:
                    s.store.set_head(s.conversation_id, self.msg_id)
                s._seen_head = self.msg_id
        stored = s.store.get_message(self.msg_id) if s.store is not None and self.msg_id else None
        entry = entry_of(stored) if stored is not None else Entry("assistant", text, None, status, meta=meta)
        if self.continuing is not None and s.entries and s.entries[-1] is self.continuing:
            s.entries[-1] = entry
        else:
            s.entries.append(entry)
        note = None
        if self.moved:
            note = ("another window added to this conversation while the reply was written: "
                    "this reply is on a branch of its own")
        return self.msg_id, note

    def _check_head(self) -> None:
        s = self.session
        if s.store is not None and s.conversation_id is not None:
            self.moved = s.store.get_conversation(s.conversation_id).head_id != s._seen_head


def reply_meta(session: ChatSession, reply: Reply | None) -> dict[str, Any]:
    info = session.model_info
    meta: dict[str, Any] = {"model": session.model_label, "device": info.device}
    if info.server is not None:  # where the reply came from; a server tells no dtype
        meta["server"] = info.server
    if info.dtype:
        meta["dtype"] = info.dtype
    if info.precision and info.server is None:
        meta["precision"] = info.precision  # "int8" while dtype says float32: the weights
    meta["settings"] = options_dict(session.options)
    if reply is not None:
        meta |= {
            "finish_reason": reply.finish_reason,
            "usage": asdict(reply.usage),
            "timings": asdict(reply.timings),
            "dropped_messages": reply.dropped_messages,
        }
    return meta
