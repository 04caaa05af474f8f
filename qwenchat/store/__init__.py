"""The conversation history store: SQLite (stdlib) at `qwenchat.paths.database_file()`.

`Store` is the only entry point; it returns typed records (`Conversation`, `Message`, `Preset`,
`SearchHit`) and raises `qwenchat.errors.StoreError` for anything a user can act on. It knows
nothing about models, tensors or widgets, and imports none of torch, textual or the engine.

    with Store.open() as store:
        conv = store.create_conversation("Qwen/Qwen2.5-0.5B-Instruct")
        user = store.add_message(conv.id, "user", "hi")           # committed before generating
        reply = store.add_message(conv.id, "assistant", "", status="pending")
        store.finish_message(reply.id, content="hello", status="complete", meta={"seed": 1})
        store.thread(conv.id)                                      # [user, reply]

Modules: `db` (connection, transactions, error translation), `migrations`, `records`,
`conversations`, `messages` (the tree), `search` (FTS5), `presets`, `export`.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from qwenchat.store.conversations import ConversationsMixin
from qwenchat.store.db import connect
from qwenchat.store.export import ExportMixin, to_markdown
from qwenchat.store.messages import HEAD, MessagesMixin
from qwenchat.store.migrations import SCHEMA_VERSION, migrate
from qwenchat.store.presets import PresetsMixin
from qwenchat.store.records import Conversation, Message, Preset, SearchHit, make_title
from qwenchat.store.search import SearchMixin

__all__ = [
    "HEAD",
    "SCHEMA_VERSION",
    "Conversation",
    "Message",
    "Preset",
    "SearchHit",
    "Store",
    "make_title",
    "to_markdown",
]


class Store(ConversationsMixin, MessagesMixin, SearchMixin, PresetsMixin, ExportMixin):
    """A handle on the history database. Thread-safe; one per process is plenty."""

    @classmethod
    def open(cls, path: str | Path | None = None) -> Store:
        """Open (creating and migrating as needed) the database at `path`, by default
        `qwenchat.paths.database_file()`."""
        if path is None:
            from qwenchat.paths import database_file

            path = database_file()
        path = Path(path).expanduser()
        conn = connect(path)
        try:
            migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
