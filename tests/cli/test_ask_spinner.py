"""`ask`'s spinner on stderr (cli/ask_spinner.py) while a JSON reply, printed only once complete,
is generated: found hands-on, `ask --schema` on a terminal showed a blank screen for 80 s after
the loading spinner, and the user gave up. These run the command in the test process on the fake
engine, with stderr a stand-in terminal whose final screen is worked out from what was written."""

from __future__ import annotations

import _thread
import io
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable

import pytest

from qwenchat.cli import ask, run
from qwenchat.engine.errors import ModelOutputError
from tests.fake_engine import FakeEngine

REPLY = '{"title": "Bolt", "story": "A small robot learned to paint the sea."}'
WAIT_S = 10


class _Stream(io.TextIOWrapper):
    def __init__(self, tty: bool) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", write_through=True)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def text(self) -> str:
        return self.buffer.getvalue().decode("utf-8")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows after `raw`, trailing blank lines dropped: enough of a terminal
    for rich's live line (carriage return, newline, erase in line, cursor up; colours and
    cursor visibility ignored)."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for m in re.finditer(r"\x1b\[([0-9;?]*)([A-Za-z])|(.)", raw, re.S):
        args, code, ch = m.groups()
        if code == "K":
            lines[row] = lines[row][:col] if args in ("", "0") else []
        elif code == "A":
            row = max(0, row - int(args or 1))
        elif code:
            continue
        elif ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            lines += [[] for _ in range(row + 1 - len(lines))]
        else:
            line = lines[row]
            line += [" "] * (col + 1 - len(line))
            line[col] = ch
            col += 1
    shown = ["".join(line).rstrip() for line in lines]
    while shown and not shown[-1]:
        shown.pop()
    return shown


@pytest.fixture
def terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What rich needs to take a stream that says it is a terminal for one."""
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "80")
    for var in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def ask_json(monkeypatch: pytest.MonkeyPatch, engine: FakeEngine, stderr_tty: bool,
             while_held: Callable[[_Stream], None] | None = None,
             flag: str = "--json-object") -> tuple[int, str, str]:
    """`qwenchat ask -n FLAG hi` on `engine` (stdout a pipe; stderr a terminal or not):
    (exit status, stdout, stderr). With `while_held`, the reply pauses after its first token
    (FakeEngine.hold) and `while_held(stderr)` runs in a thread meanwhile."""
    monkeypatch.setattr(ask, "_load", lambda settings, flags: (engine, "fake-model"))
    out, err = _Stream(tty=False), _Stream(tty=stderr_tty)
    monkeypatch.setattr(sys, "stdin", _Stream(tty=True))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    helper, failed = None, []
    if while_held is not None:
        hold = engine.hold = threading.Event()

        def watch() -> None:
            try:
                while_held(err)
            except BaseException as e:  # noqa: BLE001 - said by the test, after the reply is let go
                failed.append(e)
                hold.set()

        helper = threading.Thread(target=watch)
        helper.start()
    try:
        code = run(["ask", "-n", flag, "hi"])
    finally:
        if helper is not None:
            engine.hold.set()
            helper.join(WAIT_S)
    if failed:
        raise failed[0]
    return code, out.text(), err.text()


def _until(cond: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.01)


def _counting(err: _Stream) -> bool:
    return re.search(r"generating JSON… \d+ tokens?", err.text()) is not None


def test_a_json_reply_shows_a_spinner_with_its_token_count_then_only_the_json(monkeypatch, terminal_env):
    seen: list[str] = []

    def look(err: _Stream) -> None:
        _until(lambda: _counting(err), "no spinner with a token count while the reply was generated")
        seen.append(screen(err.text())[-1])
        engine.hold.set()

    engine = FakeEngine(script=[REPLY])
    code, out, err = ask_json(monkeypatch, engine, stderr_tty=True, while_held=look)
    assert code == 0, err
    assert seen and re.fullmatch(r". generating JSON… 1 token", seen[0]), seen  # the count of the first token
    assert out == REPLY + "\n" and json.loads(out)  # stdout is the JSON alone
    assert screen(err) == [], repr(err)  # the spinner's line is erased, nothing left on it


def test_a_reply_printed_once_whole_shows_the_spinner_meanwhile_too(monkeypatch, terminal_env):
    """`ask --no-stream` on a terminal stayed blank while the reply was written (found by a
    new-user run: 'a new user may think it hung')."""
    seen: list[str] = []

    def look(err: _Stream) -> None:
        _until(lambda: re.search(r"generating… \d+ tokens?", err.text()) is not None, "no spinner")
        seen.append(screen(err.text())[-1])
        engine.hold.set()

    engine = FakeEngine(script=["Plain words, printed once whole."])
    code, out, err = ask_json(monkeypatch, engine, stderr_tty=True, while_held=look, flag="--no-stream")
    assert code == 0, err
    assert seen and re.fullmatch(r". generating… 1 token", seen[0]), seen
    assert out == "Plain words, printed once whole.\n" and screen(err) == [], repr(err)


def test_nothing_is_written_to_stderr_that_is_not_a_terminal(monkeypatch, terminal_env):
    code, out, err = ask_json(monkeypatch, FakeEngine(script=[REPLY], delay=0.02), stderr_tty=False)
    assert (code, out, err) == (0, REPLY + "\n", "")


def test_ctrl_c_erases_the_spinner_before_saying_interrupted(monkeypatch, terminal_env):
    # Python's own handler, as a terminal's `qwenchat` has it: a suite started as a background job
    # inherits SIGINT ignored, and interrupt_main() then does nothing (the reply waited forever)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def press_ctrl_c(err: _Stream) -> None:
        _until(lambda: _counting(err), "no spinner with a token count while the reply was generated")
        _thread.interrupt_main()  # what Ctrl+C does: KeyboardInterrupt in the main thread

    try:
        code, out, err = ask_json(monkeypatch, FakeEngine(script=[REPLY]), stderr_tty=True, while_held=press_ctrl_c)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and out == ""
    assert [line for line in screen(err) if line] == ["interrupted"], repr(err)


def test_an_error_while_generating_erases_the_spinner_before_the_error(monkeypatch, terminal_env):
    class Failing(FakeEngine):
        def _stream(self, *args, **kwargs):
            for i, event in enumerate(super()._stream(*args, **kwargs)):
                if i == 3:
                    time.sleep(0.3)  # a few frames of the spinner drawn
                    raise ModelOutputError("the model produced invalid scores", "try float32")
                yield event

    code, out, err = ask_json(monkeypatch, Failing(script=[REPLY]), stderr_tty=True)
    shown = screen(err)
    assert code == 1 and out == "" and "generating JSON" in err
    assert shown and shown[0].startswith("error: the model produced invalid scores"), shown
    assert not any("generating" in line for line in shown), shown


@pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")
def test_ctrl_c_in_a_real_terminal_leaves_no_spinner_and_no_echo(endless_model, tmp_path):
    """As tried by hand: the spinner counts in a terminal (stdout too), and Ctrl+C leaves the
    stopped reply's JSON and 'interrupted' below the command: no frame of the spinner, no '^C'. Keys typed meanwhile are not
    echoed: an Enter (echoed, it moved the cursor down) left a frame of the spinner behind."""
    from tests.cli.test_ask_pretty import ask_command
    from tests.tui.terminal import Terminal

    term = Terminal("qwenchat-ask-spinner", width=80, height=60)  # room for the stopped reply's JSON
    try:
        term.run(ask_command(tmp_path / "home", endless_model, "-n --json --max-tokens 3000 --temperature 0 'Hi'; "
                             "echo exit=$?"))
        term.until(lambda s: re.search(r"generating JSON… \d+ tokens", s), 60, "no spinner counting tokens")
        term.keys("x", "Enter")
        time.sleep(0.5)  # a few frames of the spinner drawn after it
        term.keys("C-c")
        screen = term.until(lambda s: "exit=130" in s, 30, "ask did not stop on Ctrl+C")
        below = [line for line in screen.split("echo exit=$?", 1)[1].splitlines() if line.strip()]
        end = below.index("exit=130")
        assert below[end - 1] == "interrupted", screen
        assert not any("generating JSON" in line or "^C" in line or "x" == line.strip() for line in below), screen
        # what came before the note is the stopped reply, as --json reports one (signals.cancelling)
        assert re.search(r'"finish_reason":\s*"cancelled"', "".join(below[:end - 1])), screen
    finally:
        term.close()
