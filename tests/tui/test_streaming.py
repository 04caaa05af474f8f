"""A streaming reply: the view is updated at a bounded rate (not once per token), while the reply
streams, and what it shows at the end is what a redraw of the stored conversation shows."""

from __future__ import annotations

import sys
import threading

import pytest

from qwenchat.tui import streaming
from qwenchat.tui.screens.chat import ChatScreen
from qwenchat.tui.streaming import STREAMING_SWITCH_INTERVAL, ReplyBuffer
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, make_app, ready
from tests.tui.screen_text import screen_text

# Markdown of every kind a reply has (a heading, a list, a fenced code block, a table), long
# enough to stream for a couple of seconds at the fake engine's pace.
REPLY = " ".join([
    "## Steps\n\nFirst a paragraph with **bold** and `code` words that wraps over the width of the log.",
    "\n\n1. one item\n2. another item with more words\n3. the last item\n\n```python\ndef f(x):\n"
    "    return x * 2\n\nprint(f(21))\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n",
    *[f"word{i}" for i in range(220)],
])


def test_updates_per_s_counts_the_takes_that_moved_text(monkeypatch):
    clock = iter([0.0, 0.0, 0.5, 1.0, 1.0, 2.0])
    monkeypatch.setattr(streaming.time, "monotonic", lambda: next(clock))
    buffer = ReplyBuffer()
    buffer.add("a")  # 0.0
    assert buffer.take() == "a" and buffer.updates_per_s is None  # one update: no rate yet
    assert buffer.take() == ""  # nothing new: not an update (and no clock read)
    buffer.add("b")  # 0.5
    buffer.take()  # 1.0
    buffer.add("c")  # 1.0
    buffer.take()  # 2.0
    assert buffer.updates == 3 and buffer.updates_per_s == 1.0  # 2 intervals over 2 s
    buffer.reset()
    assert buffer.updates == 0 and buffer.updates_per_s is None


async def test_streamed_reply_updates_at_a_bounded_rate_and_ends_as_a_redraw_shows_it():
    words = len(REPLY.split(" "))
    app, _ = make_app(default=REPLY, delay=0.008, max_new_tokens=5000)  # ~125 words a second
    async with app.run_test(size=(110, 34)) as pilot:
        await ready(pilot)
        chat = app.chat
        chat.input.text = "show me"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat.generating and chat.last_reply is not None, timeout=60)
        await pilot.pause(0.2)
        buffer = chat.buffer
        assert buffer.tokens == words
        # updated while it streamed, many tokens at a time, never faster than the flush timer
        assert 3 <= buffer.updates < words / 4
        assert buffer.updates_per_s <= ChatScreen.FLUSH_HZ * 1.25
        view = chat.chatlog.views[-1]
        assert view.text == REPLY and view.reply.source == REPLY
        streamed = screen_text(app)
        await chat.show_conversation()  # the reply drawn at once from the stored conversation
        chat.chatlog.scroll_end(animate=False)
        await pilot.pause(0.2)
        assert screen_text(app) == streamed


async def test_only_while_a_reply_streams_the_gil_changes_hands_quickly_and_the_cursor_holds_still():
    """Both spare the engine the UI thread's time: a blinking cursor is two repaints a second."""
    hold = threading.Event()
    app, _ = make_app(hold=hold)
    sys.setswitchinterval(0.005)  # Python's default, whatever an earlier test left
    before = sys.getswitchinterval()
    async with app.run_test(size=(110, 34)) as pilot:
        try:
            await ready(pilot)
            chat = app.chat
            chat.input.text = "hi"
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.buffer.tokens == 1, timeout=30)  # held after its first word
            assert sys.getswitchinterval() == pytest.approx(STREAMING_SWITCH_INTERVAL)  # stored in µs
            box = chat.input
            assert box.has_focus and not box.cursor_blink and box._draw_cursor  # shown, not blinking
        finally:
            hold.set()  # never leave the worker waiting (the app's exit would wait for it)
        await wait_for(pilot, lambda: not chat.generating, timeout=30)
        assert sys.getswitchinterval() == before
        assert box.cursor_blink


async def test_nothing_animates_out_of_sight_while_a_reply_streams():
    """The hidden loading panel's spinner and bar woke the UI thread 31 times a second, for
    nothing, while the engine decoded beside it."""
    from textual.widgets import LoadingIndicator

    app, _ = make_app()
    async with app.run_test(size=(110, 34)) as pilot:
        await ready(pilot)
        panel = app.chat.query_one("#loading")
        assert not panel.display
        animated = [w for w in (panel.query_one(LoadingIndicator), *panel.query("ProgressBar, ProgressBar *"))
                    if w.auto_refresh]
        assert animated == []
        app.chat.show_loading("other")
        assert panel.display and panel.query_one(LoadingIndicator).auto_refresh



async def test_what_a_first_reply_would_compile_is_made_while_the_model_loads(monkeypatch):
    """The first code block of a session stalled the screen (and the engine's step) for ~50-80 ms
    while the Markdown parser's link patterns and Python's lexer were compiled: they are made
    before the session is handed to the screen."""
    from qwenchat.tui.widgets import code_box, reply

    parsed: list[str] = []
    monkeypatch.setattr(reply, "split_blocks", lambda text, *a: parsed.append(text) or [])
    code_box._lexer.cache_clear()
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert len(parsed) == 1 and "https://" in parsed[0] and "```python" in parsed[0]
        before = code_box._lexer.cache_info()
        code_box._lexer("python"), code_box._lexer("json")
        after = code_box._lexer.cache_info()
        assert (after.hits - before.hits, after.misses - before.misses) == (2, 0)  # both made already
