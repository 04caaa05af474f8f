"""The chat app in a real terminal (tmux) ends on SIGTERM like Ctrl+Q: the streaming reply is
saved as interrupted, and `qwenchat` exits 143."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from qwenchat.store import Store
from tests.conftest import share_kernels

LONG_REPLY = "max_tokens = 3000\ntemperature = 0\n"  # with endless_model: 3,000 tokens, never a stop


def messages(home) -> int:
    db = home / "data" / "history.db"
    if not db.exists():
        return 0
    with Store.open(db) as store:
        return sum(len(store.thread(c.id)) for c in store.list_conversations())


def reply_saved(home) -> bool:
    """Some of the reply is in the store (replies are saved as they grow)."""
    with Store.open(home / "data" / "history.db") as store:
        return any(m.role == "assistant" and m.content for c in store.list_conversations() for m in store.thread(c.id))


class Pane:
    """The tmux session the app runs in: its screen, and waiting on a condition."""

    def __init__(self, tmux: str, name: str) -> None:
        self.tmux, self.name = tmux, name

    def screen(self) -> str:
        return subprocess.run([self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def until(self, cond, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what}; the terminal shows:\n{self.screen()}")


@pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")
def test_sigterm_quits_the_app_and_saves_the_streaming_reply(endless_model, tmp_path):
    tmux = shutil.which("tmux")
    assert tmux, "tmux is required for this test (apt-get install -y tmux; scripts/test installs it)"
    name, home = f"qwenchat-sigterm-{os.getpid()}", tmp_path / "home"
    pid_file, status_file = tmp_path / "pid", tmp_path / "status"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(LONG_REPLY)
    share_kernels(home)
    app = f"{sys.executable} -m qwenchat chat -m {endless_model} --device cpu --dtype float32"
    cmd = (f"cd {os.getcwd()} && QWENCHAT_HOME={home} HF_HUB_OFFLINE=1 "
           f"sh -c 'echo $$ > {pid_file}; exec {app}'; echo $? > {status_file}; sleep 60")  # the pane stays to be read
    subprocess.run([tmux, "new-session", "-d", "-s", name, "-x", "120", "-y", "40", cmd], check=True)
    pane = Pane(tmux, name)
    screen, until = pane.screen, pane.until

    try:
        until(lambda: "cpu/float32" in screen(), 60, "the model never loaded")
        subprocess.run([tmux, "send-keys", "-t", name, "-l", "Tell a long story"], check=True)
        subprocess.run([tmux, "send-keys", "-t", name, "Enter"], check=True)
        until(lambda: messages(home) >= 1, 30, "the message was never sent")
        until(lambda: reply_saved(home), 60, "no reply text was saved")  # a fixed wait lost the race on a busy machine
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        until(status_file.exists, 30, "qwenchat did not exit on SIGTERM")
        assert status_file.read_text().strip() == "143"
        text = screen()
        assert "terminated" in text, text  # qwenchat's note: it ended the app itself, not the signal
        assert "Traceback" not in text
    finally:
        subprocess.run([tmux, "kill-session", "-t", name], capture_output=True)
    with Store.open(home / "data" / "history.db") as store:
        (conv,) = store.list_conversations()
        thread = store.thread(conv.id)
    assert [m.role for m in thread] == ["user", "assistant"]
    assert thread[1].status == "interrupted" and thread[1].content


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(sys.platform == "win32", reason="tmux is POSIX only")
def test_closing_the_terminal_mid_reply_ends_the_app_and_keeps_the_reply(endless_model, tmp_path):
    """Found in tmux: with its terminal gone (SIGHUP), Textual's shutdown blocked for good on
    writes to it, and the app stayed behind (1 GB) until killed by hand."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux is required for this test (apt-get install -y tmux; scripts/test installs it)"
    name, home = f"qwenchat-hangup-{os.getpid()}", tmp_path / "home"
    pid_file = tmp_path / "pid"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(LONG_REPLY)
    share_kernels(home)
    app = f"{sys.executable} -m qwenchat chat -m {endless_model} --device cpu --dtype float32"
    cmd = f"cd {os.getcwd()} && QWENCHAT_HOME={home} HF_HUB_OFFLINE=1 sh -c 'echo $$ > {pid_file}; exec {app}'"
    subprocess.run([tmux, "new-session", "-d", "-s", name, "-x", "120", "-y", "40", cmd], check=True)
    pane = Pane(tmux, name)
    screen, until = pane.screen, pane.until

    pid = None
    try:
        until(lambda: "cpu/float32" in screen(), 60, "the model never loaded")
        pid = int(pid_file.read_text())
        subprocess.run([tmux, "send-keys", "-t", name, "-l", "Tell a long story"], check=True)
        subprocess.run([tmux, "send-keys", "-t", name, "Enter"], check=True)
        until(lambda: reply_saved(home), 60, "no reply text was saved")
        subprocess.run([tmux, "kill-session", "-t", name], check=True)  # the terminal window closes
        until(lambda: not _alive(pid), 20, "qwenchat stayed behind its closed terminal")
    finally:
        subprocess.run([tmux, "kill-session", "-t", name], capture_output=True)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
    with Store.open(home / "data" / "history.db") as store:
        (conv,) = store.list_conversations()
        thread = store.thread(conv.id)
    assert [m.role for m in thread] == ["user", "assistant"]
    assert thread[1].status == "interrupted" and thread[1].content
