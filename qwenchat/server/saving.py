"""`qwenchat serve --save`: chat requests stored in the history through `ChatSession`, as `ask`
stores them, in conversations marked as coming from the API (`settings["source"] == "api"`).

API clients resend the whole conversation each turn. A request whose messages (all but the last)
are exactly a conversation this server stored, reply included, continues that conversation;
any other request starts a new one, with the earlier messages it carries stored first.
Runs on the generation queue's thread, like every engine call.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from qwenchat.engine.records import Chunk, GenerateOptions, Reply
from qwenchat.errors import StoreError

if TYPE_CHECKING:
    from qwenchat.store import Store

SOURCE = "api"
REMEMBERED = 1024  # conversations this server can continue (the oldest are forgotten)


class Saver:
    def __init__(self, engine: Any, label: str, store: "Store | None" = None) -> None:
        self.engine, self.label = engine, label
        self._store = store
        self._known: OrderedDict[str, int] = OrderedDict()  # digest of stored messages -> conversation id

    def applies(self, messages: list[dict[str, str]]) -> bool:
        """ChatSession answers a user message; a request ending otherwise is answered unsaved."""
        return bool(messages) and messages[-1]["role"] == "user"

    def chat(self, messages: list[dict[str, str]], options: GenerateOptions,
             cancel: threading.Event) -> Iterator[Chunk | Reply]:
        from qwenchat.session import ChatSession

        store = self._open()
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        session = ChatSession(self.engine, store, model_label=self.label, system_prompt=system, options=options)
        if not self._continue(session, messages[:-1]):
            body = messages[1:-1] if system is not None else messages[:-1]
            session.load(self._create(store, system, body, options))
        session.options = options
        events = session.send(messages[-1]["content"])
        return self._replies(session, events, messages, cancel)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _open(self) -> "Store":
        if self._store is None:
            from qwenchat.store import Store

            self._store = Store.open()
        return self._store

    def _continue(self, session: Any, earlier: list[dict[str, str]]) -> bool:
        cid = self._known.get(_digest(earlier))
        if cid is None:
            return False
        try:
            session.load(cid)
        except StoreError:  # deleted meanwhile
            return False
        return session.messages == earlier  # not changed in another window since

    def _create(self, store: "Store", system: str | None, body: list[dict[str, str]], options: GenerateOptions) -> int:
        settings = {k: v for k, v in asdict(options).items() if k != "stop" and v is not None}
        conv = store.create_conversation(self.label, system, settings=settings | {"source": SOURCE})
        for m in body:
            store.add_message(conv.id, m["role"], m["content"])
        return conv.id

    def _replies(self, session: Any, events: Iterator[Any], messages: list[dict[str, str]],
                 cancel: threading.Event) -> Iterator[Chunk | Reply]:
        try:
            for event in events:
                if cancel.is_set():
                    session.cancel()  # the engine stops at its next token; the reply is saved as interrupted
                if isinstance(event, Chunk):
                    yield event
                else:
                    reply = event.reply
                    done = messages + [{"role": "assistant", "content": reply.text}]
                    self._remember(_digest(done), event.conversation_id)
                    yield reply
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _remember(self, digest: str, cid: int | None) -> None:
        if cid is None:
            return
        self._known[digest] = cid
        self._known.move_to_end(digest)
        while len(self._known) > REMEMBERED:
            self._known.popitem(last=False)


def _digest(messages: list[dict[str, str]]) -> str:
    text = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
