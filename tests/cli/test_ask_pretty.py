"""`ask` on a terminal draws the reply as Markdown while it streams (cli/ask.py `_run_pretty`)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import rich.markdown

from qwenchat.cli import ask
from qwenchat.engine.records import Chunk


def test_the_growing_reply_is_parsed_at_a_bounded_rate_and_drawn_whole(monkeypatch):
    """It was parsed whole at every token, on the engine's thread: quadratic in the reply's length."""
    parsed: list[str] = []

    class Counting(rich.markdown.Markdown):
        def __init__(self, text: str, *a, **kw) -> None:
            parsed.append(text)
            super().__init__(text, *a, **kw)

    monkeypatch.setattr(rich.markdown, "Markdown", Counting)
    pieces = [f"word{i} " for i in range(400)]
    whole = "".join(pieces)
    turn = SimpleNamespace(reply=SimpleNamespace(text=whole))
    before = sys.getswitchinterval()

    def events():
        yield from (Chunk(p) for p in pieces)
        yield turn

    assert ask._run_pretty(events(), stream=True) is turn
    assert parsed[-1] == whole  # the last draw is the whole reply
    assert len(parsed) < 40  # 400 tokens in well under a second: a handful of parses, not 400
    assert sys.getswitchinterval() == before  # the GIL hand-off is undone
