"""The app on a real (tiny, random) model through the real session, engine and store: the same
factory `qwenchat chat` uses. Also a real terminal run in tmux."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenchat.cli.chat import make_session_factory
from qwenchat.config import Settings
from qwenchat.tui.app import QwenchatApp
from tests.conftest import share_kernels
from tests.tui.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


async def test_real_tiny_model_send_stop_regenerate(tiny_model, store):
    settings = Settings(device="cpu", dtype="float32", max_tokens=12, temperature=0.0)
    app = QwenchatApp(make_session_factory(settings), model=str(tiny_model), theme="qwenchat-dark",
                      persist_theme=False)
    async with app.run_test(size=(110, 34)) as pilot:
        await wait_for(pilot, lambda: app.session is not None, timeout=30)
        assert app.session.model_info.device == "cpu"
        app.chat.input.text = "hello there"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.last_reply is not None, timeout=30)
        reply = app.chat.last_reply
        assert reply.usage.completion_tokens > 0
        view = app.chat.chatlog.views[-1]
        assert view.role == "assistant" and view.text == reply.text
        assert "cpu/float32" in str(app.query_one("#status").render())
        first = reply.text
        await pilot.press("ctrl+r")  # greedy: the same reply again, mostly from the cache
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.last_reply is not reply, timeout=30)
        assert app.chat.last_reply.text == first
        assert app.chat.last_reply.usage.cached_tokens > 0
        cid = app.session.conversation_id
    thread = store.thread(cid)
    assert [m.role for m in thread] == ["user", "assistant"]
    assert thread[0].content == "hello there" and thread[1].content == first


@pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")
def test_real_terminal_in_tmux(tiny_model, tmp_path):
    tmux = shutil.which("tmux")
    assert tmux, "tmux is required for this test (apt-get install -y tmux; scripts/test installs it)"
    name = f"qwenchat-test-{os.getpid()}"
    home = tmp_path / "home"
    marker = tmp_path / "exited"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text("max_tokens = 8\ntemperature = 0.0\n")
    share_kernels(home)
    python = sys.executable
    cmd = (f"cd {ROOT} && QWENCHAT_HOME={home} HF_HUB_OFFLINE=1 "
           f"{python} -m qwenchat chat -m {tiny_model} --device cpu --dtype float32; "
           f"echo $? > {marker}")
    subprocess.run([tmux, "new-session", "-d", "-s", name, "-x", "120", "-y", "40", cmd], check=True)

    def screen() -> str:
        return subprocess.run([tmux, "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout

    def until(cond, timeout=30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = screen()
            if cond(text):
                return text
            time.sleep(0.2)
        raise AssertionError("terminal never showed what was expected:\n" + screen())

    try:
        until(lambda s: "cpu/float32" in s)  # the model loaded
        subprocess.run([tmux, "send-keys", "-t", name, "-l", "hi from tmux"], check=True)
        subprocess.run([tmux, "send-keys", "-t", name, "Enter"], check=True)
        text = until(lambda s: "Assistant" in s and "tok/s" in s)
        assert "hi from tmux" in text
        subprocess.run([tmux, "send-keys", "-t", name, "C-q"], check=True)
        end = time.monotonic() + 15
        while not marker.exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert marker.exists(), "qwenchat did not exit after Ctrl+Q:\n" + screen()
        assert marker.read_text().strip() == "0"
    finally:
        subprocess.run([tmux, "kill-session", "-t", name], capture_output=True)
    from qwenchat.store import Store

    with Store.open(home / "data" / "history.db") as s:
        convs = s.list_conversations()
        assert len(convs) == 1
        assert [m.role for m in s.thread(convs[0].id)] == ["user", "assistant"]
