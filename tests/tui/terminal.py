"""A real terminal for end-to-end tests: a tmux session running a plain shell, into which a
test types commands and keys and whose screen it reads (also after the app has exited)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import share_kernels

PROMPT = "PROMPT$ "


class Terminal:
    def __init__(self, name: str, width: int = 120, height: int = 40) -> None:
        tmux = shutil.which("tmux")
        assert tmux, "tmux is required for this test (apt-get install -y tmux; scripts/test installs it)"
        self.tmux, self.name = tmux, f"{name}-{os.getpid()}"
        env = {"PS1": PROMPT, "HOME": os.environ.get("HOME", "/tmp"), "PATH": os.environ.get("PATH", ""),
               "TERM": "xterm-256color"}
        shell = "env -i " + " ".join(f"{k}='{v}'" for k, v in env.items()) + " bash --norc --noprofile"
        subprocess.run([tmux, "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), shell],
                       check=True)
        self.until(lambda s: PROMPT.strip() in s, 10, "the shell never started")

    def screen(self, history: bool = False) -> str:
        args = [self.tmux, "capture-pane", "-p", "-J", "-t", self.name] + (["-S", "-"] if history else [])
        return subprocess.run(args, capture_output=True, text=True).stdout

    def type(self, text: str) -> None:
        subprocess.run([self.tmux, "send-keys", "-t", self.name, "-l", text], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run([self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def run(self, command: str) -> None:
        self.type(command)
        self.keys("Enter")

    def resize(self, width: int, height: int) -> None:
        subprocess.run([self.tmux, "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)],
                       check=True)

    def until(self, cond, timeout: float, what: str) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.screen()
            if cond(text):
                return text
            time.sleep(0.15)
        raise AssertionError(f"{what}; the terminal shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([self.tmux, "kill-session", "-t", self.name], capture_output=True)


def app_script(path: Path, root: Path, home: Path, python: str, args: str) -> Path:
    """A shell script that starts the app (a short line to type; no line wrapping). The home's
    int8 kernel is the test session's (tests/conftest.py: share_kernels)."""
    share_kernels(home)
    path.write_text(f"cd {root}\nQWENCHAT_HOME={home} HF_HUB_OFFLINE=1 exec {python} -m qwenchat {args}\n")
    return path
