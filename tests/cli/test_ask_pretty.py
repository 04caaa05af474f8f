"""`ask` on a terminal draws the reply as Markdown while it streams (cli/ask.py `_run_pretty`)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import qwenchat.markdown_draw
from qwenchat.cli import ask
from qwenchat.engine.records import Chunk


def test_the_growing_reply_is_parsed_at_a_bounded_rate_and_drawn_whole(monkeypatch):
    """It was parsed whole at every token, on the engine's thread: quadratic in the reply's length."""
    parsed: list[str] = []

    class Counting(qwenchat.markdown_draw.ChatMarkdown):
        def __init__(self, text: str, *a, **kw) -> None:
            parsed.append(text)
            super().__init__(text, *a, **kw)

    monkeypatch.setattr(qwenchat.markdown_draw, "ChatMarkdown", Counting)
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


def _reply(finish: str, dropped: int = 0):
    from qwenchat.engine.records import Reply, Timings, Usage

    return Reply("text", finish, Usage(5, 0, 5, 12), Timings(0.1, 0.1, 0.1, 1.0, 1.0), dropped_messages=dropped)


def test_a_reply_cut_by_the_token_limit_is_said_on_stderr(capsys):
    """A reply cut at max tokens just stopped mid-sentence, with nothing saying why (seen in tmux
    on a conversation that had saved max tokens 12)."""
    ask._say_how_it_ended(_reply("length", dropped=2), shown=True)
    err = capsys.readouterr().err
    assert "cut at the token limit (12 tokens)" in err and "--max-tokens" in err
    assert "left out the 2 oldest messages" in err
    ask._say_how_it_ended(_reply("stop"), shown=True)
    ask._say_how_it_ended(_reply("length"), shown=False)  # structured output says it in its error
    assert capsys.readouterr().err == ""
