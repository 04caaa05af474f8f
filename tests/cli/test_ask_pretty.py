"""`ask`'s reply as it streams and ends (cli/ask.py `_run`, `_run_pretty`): drawn as Markdown on a
terminal, and what is said on stderr."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import qwenchat.markdown_draw
from qwenchat.cli import ask
from qwenchat.engine.records import Chunk
from qwenchat.store import Store
from tests.conftest import share_kernels
from tests.tui.terminal import Terminal

ROOT = Path(__file__).resolve().parents[2]


def test_the_growing_reply_is_parsed_at_a_bounded_rate_and_drawn_whole(monkeypatch, capsys):
    """It was parsed whole at every token, on the engine's thread: quadratic in the reply's length."""
    import qwenchat.markdown

    parses: list[str] = []
    split = qwenchat.markdown.split_blocks

    def counting(text, *a, **kw):
        parses.append(text)
        return split(text, *a, **kw)

    monkeypatch.setattr(qwenchat.markdown, "split_blocks", counting)
    pieces = [f"word{i} " + ("\n\n" if i % 50 == 49 else "") for i in range(400)]  # 8 paragraphs
    whole = "".join(pieces)
    turn = SimpleNamespace(reply=SimpleNamespace(text=whole))
    before = sys.getswitchinterval()

    def events():
        yield from (Chunk(p) for p in pieces)
        yield turn

    assert ask._run_pretty(events(), stream=True) is turn
    assert len(parses) < 40  # 400 tokens in well under a second: a handful of parses, not 400
    out = capsys.readouterr().out
    assert all(len(re.findall(rf"\bword{i}\b", out)) == 1 for i in range(400))  # all of it, each word once
    assert sys.getswitchinterval() == before  # the GIL hand-off is undone


@pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")
def test_a_reply_taller_than_the_terminal_is_in_its_scrollback_once(endless_model, tmp_path):
    """Found hands-on: a 60-line reply left 44 copies of its first lines in the scrollback (rich's
    Live redrew the whole reply, and cannot move the cursor above the screen's top)."""
    home = tmp_path / "home"
    term = Terminal("qwenchat-ask-tall", width=60, height=10)
    try:
        term.run(ask_command(home, endless_model, "--max-tokens 1500 --temperature 0 'Tell a long story'; echo exit=$?"))
        term.until(lambda s: "exit=0" in s, 120, "ask did not end")
        everything = term.screen(history=True)
        drawn = everything.split("'Tell a long story'; echo exit=$?", 1)[1].split("exit=0", 1)[0]
        lines = [ln.rstrip() for ln in drawn.splitlines() if ln.strip()]
        assert len(lines) > 20, drawn  # two screens and more
        assert [everything.count(line) for line in lines[:3]] == [1, 1, 1], everything  # its start, once
    finally:
        term.close()


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
    assert "keeps the limit" not in err  # a first question: no conversation to keep it
    ask._say_how_it_ended(_reply("length"), shown=True, continued=True)
    assert "this conversation keeps the limit it was given" in capsys.readouterr().err
    ask._say_how_it_ended(_reply("stop"), shown=True)
    ask._say_how_it_ended(_reply("length"), shown=False)  # structured output says it in its error
    assert capsys.readouterr().err == ""


def ask_command(home, model, args: str) -> str:
    """A shell line running `qwenchat ask` on `model` in an isolated home (the session's kernels)."""
    share_kernels(home)
    return (f"cd {ROOT} && QWENCHAT_HOME={home} HF_HUB_OFFLINE=1 {sys.executable} -m qwenchat ask "
            f"-m {model} --device cpu --dtype float32 {args}")


@pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")
def test_ctrl_c_in_a_terminal_leaves_the_reply_drawn_once(endless_model, tmp_path):
    """Found in tmux: Ctrl+C's echoed "^C" after the live reply's full-width last line wrapped
    onto a new line, and rich's final redraw began one line low and left the first line twice.
    The terminal's echo comes back afterwards."""
    home = tmp_path / "home"
    term = Terminal("qwenchat-ask-ctrl-c", width=80, height=30)
    try:
        term.run(ask_command(home, endless_model, "--max-tokens 3000 --temperature 0 'Tell a long story'; echo exit=$?"))
        term.until(lambda s: len([ln for ln in s.splitlines() if ln.strip()]) > 6, 60, "no reply streamed")
        term.keys("C-c")
        screen = term.until(lambda s: "exit=130" in s, 30, "ask did not stop on Ctrl+C")
        drawn = screen.split("'Tell a long story'; echo exit=$?", 1)[1].split("interrupted", 1)[0]
        lines = [ln.rstrip() for ln in drawn.splitlines() if ln.strip()]
        assert "^C" not in screen
        assert lines and lines.count(lines[0]) == 1, drawn
        term.run("stty -a | tr ' ' '\\n' | grep -x -e echo -e echoctl | tr '\\n' ' '; echo")
        term.until(lambda s: "echo echoctl" in s, 10, "the terminal's echo was not restored")
    finally:
        term.close()
    with Store.open(home / "data" / "history.db") as store:
        (conv,) = store.list_conversations()
        reply = store.thread(conv.id)[-1]
    assert reply.status == "interrupted" and reply.content


@pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")
def test_ask_in_the_background_of_a_terminal_is_not_stopped(endless_model, tmp_path):
    """Hiding typed keys changes the terminal's modes, which stops a background job (SIGTTOU):
    `ask ... &` stood "Stopped" until brought to the foreground."""
    term = Terminal("qwenchat-ask-bg", width=80, height=30)
    try:
        term.run(ask_command(tmp_path / "home", endless_model, "--max-tokens 5 --no-save 'Hi' & wait $!; echo exit=$?"))
        ended = lambda s: any(line.startswith("exit=") for line in s.splitlines())  # noqa: E731
        screen = term.until(ended, 60, "the background ask never ended (stopped?)")
        assert "exit=0" in screen.splitlines() and "Stopped" not in screen, screen
    finally:
        term.close()


def test_a_reply_moved_to_a_branch_by_another_window_is_said_on_stderr(isolated_home, monkeypatch, capsys):
    """Two `ask -c` at once: the reply of the one whose conversation moved on meanwhile went to a
    branch of its own, and the note saying so (the README's) was printed by the app only."""
    import threading
    import time

    from qwenchat import reply_writer
    from qwenchat.session import ChatSession
    from tests.fake_engine import FakeEngine

    monkeypatch.setattr(reply_writer, "SAVE_EVERY_S", 60.0)  # A's reply is first stored when it ends
    hold = threading.Event()
    with Store.open() as a_store, Store.open() as b_store:
        a = ChatSession(FakeEngine(script=["ok", "a reply of several words"]), a_store)
        *_, _setup = a.send("setup")
        a.engine.hold = hold
        done: list = []
        worker = threading.Thread(target=lambda: done.append(ask._run(a, "A asks", pretty=False, output="stream")))
        worker.start()
        deadline = time.monotonic() + 10
        while not any(m.content == "A asks" for m in b_store.thread(a.conversation_id)):
            assert time.monotonic() < deadline, "A's message was never stored"
            time.sleep(0.01)
        b = ChatSession(FakeEngine(script=["B answer"]), b_store)
        b.load(a.conversation_id)
        *_, turn_b = b.send("B asks")  # lands while A's reply is being written
        hold.set()
        worker.join(10)
    (turn_a,) = done
    assert turn_a.note and turn_b.note is None
    err = capsys.readouterr().err
    assert turn_a.note in err
