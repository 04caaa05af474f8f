"""Full-text search over message text (the FTS5 index from migration 2).

User text is never passed to FTS5 as query syntax: each word becomes a quoted term, and all
terms must match (so `C++ "foo` cannot raise a syntax error). Words joined without a space
(`2+2`, `os.path`) are one phrase: they match side by side, not anywhere apart. The last word
also matches as a prefix, so a search works while the word is being typed.
"""

from __future__ import annotations

import re

from qwenchat.store.db import StoreBase
from qwenchat.store.records import SearchHit

_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str:
    """A safe FTS5 MATCH expression for free text: every space-separated chunk as a phrase of
    its words, the last word a prefix."""
    terms = [f'"{" ".join(words)}"' for chunk in text.split() if (words := _WORD.findall(chunk))]
    if not terms:
        return '""'
    terms[-1] += "*"
    return " ".join(terms)


class SearchMixin(StoreBase):
    def search(self, text: str, limit: int = 20) -> list[SearchHit]:
        """Messages whose text matches every word of `text`, best match first."""
        if not _WORD.search(text):
            return []
        with self._read() as conn:
            rows = conn.execute(
                """
                SELECT m.id, m.conversation_id, m.role, m.created_at, c.title,
                       snippet(messages_fts, 0, '[', ']', '…', 12) AS snip
                FROM messages_fts
                JOIN messages m ON m.id = messages_fts.rowid
                JOIN conversations c ON c.id = m.conversation_id
                WHERE messages_fts MATCH ?
                ORDER BY bm25(messages_fts), m.id DESC
                LIMIT ?
                """,
                (fts_query(text), max(0, int(limit))),
            ).fetchall()
        return [
            SearchHit(
                conversation_id=r["conversation_id"],
                conversation_title=r["title"],
                message_id=r["id"],
                role=r["role"],
                snippet=" ".join(r["snip"].split()),
                created_at=r["created_at"],
            )
            for r in rows
        ]
