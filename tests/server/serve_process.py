"""`qwenchat serve ...` as a subprocess, for the tests that drive the command itself (tests/server,
tests/real): its stderr lines collected as they come, the URL it prints, a signal to stop it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


class ServeProcess:
    """`qwenchat serve ...` in a subprocess; its stderr lines collected as they come."""

    def __init__(self, args: list[str], home: Path) -> None:
        env = dict(os.environ, QWENCHAT_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.pop("QWENCHAT_API_KEY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "qwenchat", "serve", *args], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.home = home

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stderr so far:\n" + "\n".join(self.lines))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stop(self, signum: int, timeout: float = 30) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            time.sleep(0.1)  # the reader thread takes the last lines

    def start(self, timeout: float = 120) -> str:
        """Wait until the model is loaded; the base URL the server printed."""
        self.url = self.wait_for(r"listening on (http://\S+/v1)", timeout).group(1)
        self.wait_for(r"ready, model", timeout)
        return self.url

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
