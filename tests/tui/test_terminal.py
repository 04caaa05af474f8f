"""The app in a real terminal (tmux) on a tiny model, read the way a user reads it: a multi-line
message shows its lines; after a quit (idle, mid-reply, while loading) nothing but the shell
prompt follows, also after the window shrank and grew; a resize to 60x15 mid-reply keeps
following the reply; `-c` continues a chat
with the chat's own model after another model was used."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from qwenchat.store import Store
from tests.tui.terminal import PROMPT, Terminal, app_script

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")

ROOT = Path(__file__).resolve().parents[2]
LONG_REPLY = "max_tokens = 3000\ntemperature = 0\n"  # with endless_model: 3,000 tokens, never a stop
SHORT_REPLY = "max_tokens = 8\ntemperature = 0.0\n"
LOADED = re.compile(r"cpu/\w+")


def setup_home(tmp_path: Path, config: str) -> Path:
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(config)
    return home


def after_command(screen: str, command: str) -> list[str]:
    """The terminal's lines after the line where `command` was typed."""
    lines = screen.rstrip("\n").splitlines()
    at = max(i for i, line in enumerate(lines) if command in line)
    return [line.rstrip() for line in lines[at + 1:]]


def start_long_reply(term: Terminal, tmp_path: Path, model: Path) -> str:
    """Start the app on `model` in `term` and a long reply in it; returns the command typed."""
    home = setup_home(tmp_path, LONG_REPLY)
    script = app_script(tmp_path / "run.sh", ROOT, home, sys.executable, f"chat -m {model} --device cpu --dtype float32")
    command = f"sh {script}; echo exit=$?"
    term.run(command)
    term.until(lambda s: LOADED.search(s) is not None, 60, "the model never loaded")
    term.type("Tell a long story")
    term.keys("Enter")
    term.until(lambda s: "generating" in s, 30, "no reply started")
    return command


def quit_and_read(term: Terminal, command: str) -> list[str]:
    term.keys("C-q")
    term.until(lambda s: re.search(r"^exit=\d+", s, re.M) is not None, 30, "qwenchat did not exit after Ctrl+Q")
    text = term.screen(history=True)
    assert "Traceback" not in text and "Exception" not in text and "Error" not in text, text
    return after_command(text, command)


@pytest.mark.parametrize("when", ["mid-reply", "while loading"])  # idle: the multi-line test's quit
def test_quit_leaves_nothing_but_the_prompt(endless_model, tmp_path, when):
    home = setup_home(tmp_path, LONG_REPLY if when == "mid-reply" else SHORT_REPLY)
    script = app_script(tmp_path / "run.sh", ROOT, home, sys.executable,
                        f"chat -m {endless_model} --device cpu --dtype float32")
    command = f"sh {script}; echo exit=$?"
    term = Terminal("qwenchat-quit")
    try:
        term.run(command)
        if when == "while loading":
            term.until(lambda s: "Loading" in s, 30, "the app never showed its loading state")
        else:
            term.until(lambda s: LOADED.search(s) is not None, 60, "the model never loaded")
        if when == "mid-reply":
            term.type("Tell a long story")
            term.keys("Enter")
            term.until(lambda s: "generating" in s, 30, "no reply started")
        rest = quit_and_read(term, command)
        assert rest[:2] == ["exit=0", PROMPT.strip()], rest
        assert all(not line.strip() for line in rest[2:]), rest
    finally:
        term.close()
    if when == "mid-reply":
        with Store.open(home / "data" / "history.db") as store:
            (conv,) = store.list_conversations()
            reply = store.thread(conv.id)[-1]
        assert reply.role == "assistant" and reply.status == "interrupted"


def test_multi_line_message_shows_its_lines(tiny_model, tmp_path):
    """Also the quit while idle (once a test of its own, which started the app once more)."""
    home = setup_home(tmp_path, SHORT_REPLY)
    script = app_script(tmp_path / "run.sh", ROOT, home, sys.executable,
                        f"chat -m {tiny_model} --device cpu --dtype float32")
    command = f"sh {script}; echo exit=$?"
    term = Terminal("qwenchat-lines")
    try:
        term.run(command)
        term.until(lambda s: LOADED.search(s) is not None, 60, "the model never loaded")
        term.type("first line")
        term.keys("C-j")
        term.type("    indented second")
        term.keys("C-j")
        term.type("third")
        term.keys("Enter")
        text = term.until(lambda s: re.search(r"\d+ tok\b", s) is not None, 60, "no reply")
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if line.rstrip().endswith("first line"))
        column = lines[at].index("first line")
        shown = [line[column:].rstrip() for line in lines[at + 1:at + 3]]
        assert shown == ["    indented second", "third"], text
        rest = quit_and_read(term, command)
        assert rest[:2] == ["exit=0", PROMPT.strip()], rest
        assert all(not line.strip() for line in rest[2:]), rest
    finally:
        term.close()


def test_resize_to_60x15_mid_reply_keeps_following(endless_model, tmp_path):
    term = Terminal("qwenchat-resize")
    try:
        command = start_long_reply(term, tmp_path, endless_model)
        term.resize(60, 15)
        # the reply ends; if the chat still follows it, its details line (… N tokens …) is in view
        text = term.until(lambda s: "generating" not in s and re.search(r"\d+ tokens", s), 120,
                          "the end of the reply was not followed after the resize")
        assert len(text.splitlines()[0]) <= 60
        quit_and_read(term, command)
    finally:
        term.close()


def test_a_window_made_smaller_then_larger_leaves_nothing_after_quitting(endless_model, tmp_path):
    """tmux copies an app's alternate screen into the user's screen and scrollback when the window
    shrank and grew while a screenful of reply was shown; the app clears that screen before
    leaving it (app.clearing_on_exit)."""
    term = Terminal("qwenchat-regrow")
    try:
        command = start_long_reply(term, tmp_path, endless_model)
        time.sleep(3)  # a screenful of reply
        term.resize(80, 24)
        term.until(lambda s: len(s.splitlines()[0]) <= 80, 10, "the window did not shrink")
        time.sleep(1)
        term.resize(140, 44)
        term.until(lambda s: len(s.splitlines()) >= 44, 10, "the window did not grow")
        time.sleep(1)
        rest = quit_and_read(term, command)
        assert rest[:2] == ["exit=0", PROMPT.strip()], rest
        assert all(not line.strip() for line in rest[2:]), rest
        # tmux put the copied lines above the command, in the scrollback
        lines = term.screen(history=True).splitlines()
        above = lines[: next(i for i, line in enumerate(lines) if command in line)]
        assert all(not line.strip() for line in above), above
    finally:
        term.close()


def test_keys_in_one_burst_keep_their_order_and_text_after_enter_stays(tiny_model, tmp_path):
    """A laggy link delivers keystrokes together: Backspace and the arrows apply where they were
    typed, and what followed Enter stays in the box for the next message."""
    home = setup_home(tmp_path, SHORT_REPLY)
    script = app_script(tmp_path / "run.sh", ROOT, home, sys.executable, f"chat -m {tiny_model} --device cpu --dtype float32")
    command = f"sh {script}; echo exit=$?"
    term = Terminal("qwenchat-burst")
    try:
        term.run(command)
        term.until(lambda s: LOADED.search(s) is not None, 60, "the model never loaded")
        term.type("hello\x7fp me, abc\x1b[DX")  # one write: Backspace and Left among the letters
        term.until(lambda s: "hellp me, abXc" in s, 10, "the keys were applied out of order")
        term.type("\rnext one")  # Enter, then more typing in the same write
        term.until(lambda s: re.search(r"\d+ tokens", s) is not None, 60, "the message was not sent")
        with Store.open(home / "data" / "history.db") as store:
            (conv,) = store.list_conversations()
            assert store.thread(conv.id)[0].content == "hellp me, abXc"
        term.until(lambda s: "│ next one" in s, 10, "what followed Enter left the box")
        quit_and_read(term, command)
    finally:
        term.close()


def test_continue_uses_the_chats_own_model(tiny_models, tmp_path):
    first, other = tiny_models["qwen25_05b"], tiny_models["untied"]
    home = setup_home(tmp_path, SHORT_REPLY + f'model = "{other}"\n')
    term = Terminal("qwenchat-continue")
    try:
        for name, args in (("a", f"chat -m {first} --device cpu --dtype float32"),
                           ("b", "chat --device cpu --dtype float32"),  # the config's model
                           ("c", "-c --device cpu --dtype float32")):
            script = app_script(tmp_path / f"run-{name}.sh", ROOT, home, sys.executable, args)
            command = f"sh {script}; echo exit=$?"
            term.run("clear")
            term.run(command)
            text = term.until(lambda s: LOADED.search(s) is not None, 60, "the model never loaded")
            if name == "a":
                term.type("hello from the first model")
                term.keys("Enter")
                term.until(lambda s: re.search(r"\d+ tok\b", s) is not None, 60, "no reply")
            if name == "b":
                assert other.name in text, text
                term.keys("C-n")
            if name == "c":
                assert first.name in text and "hello from the first model" in text, text
            rest = quit_and_read(term, command)
            assert rest[:1] == ["exit=0"], rest
    finally:
        term.close()
