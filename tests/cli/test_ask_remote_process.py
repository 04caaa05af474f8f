"""`qwenchat ask -m URL` as a real process where the process is the point: the reply streams as it
comes, Ctrl+C and SIGTERM close the HTTP stream and keep the partial reply as interrupted (exit
130, 143), and a remote ask never imports torch. The servers run in the test process: the
scripted fake server (an endless, paced reply) and a real `qwenchat serve` on the tiny model."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qwenchat.store import Store
from tests.remote.conftest import fake_server, serve  # noqa: F401  (fixtures)
from tests.remote.fake_server import Response, chunk


class Endless:
    """A reply that never ends by itself; `closed` is set when the server stops sending it (the
    client closed the stream)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self):
        try:
            n = 0
            while True:
                n += 1
                yield chunk(f"w{n} ")
        finally:
            self.closed.set()


def start(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "QWENCHAT_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("QWENCHAT_API_KEY", "OPENAI_API_KEY"):
        env.pop(var, None)
    return subprocess.Popen([sys.executable, "-m", "qwenchat", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def read_until(proc: subprocess.Popen, needle: bytes, timeout: float = 60) -> bytes:
    """stdout as it comes, until it holds `needle` (the reply is streaming)."""
    got, deadline = b"", time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, (got, proc.stderr.read() if proc.poll() is not None else b"")
        if select.select([proc.stdout], [], [], min(left, 0.5))[0]:
            got += os.read(proc.stdout.fileno(), 4096)
    return got


def stored(home: Path) -> list[tuple[str, str, str, dict]]:
    with Store.open(home / "data" / "history.db") as store:
        return [(m.role, m.content, m.status, m.meta) for c in store.list_conversations() for m in store.thread(c.id)]


@pytest.mark.parametrize(("signum", "status", "note"), [(signal.SIGINT, 130, "interrupted"),
                                                       (signal.SIGTERM, 143, "terminated")])
def test_a_signal_closes_the_stream_and_keeps_the_partial_reply(fake_server, isolated_home, signum, status, note):
    reply = Endless()
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=reply, delay=0.05)
    proc = start(["ask", "-m", fake_server.url, "count forever"], isolated_home)
    try:
        shown = read_until(proc, b"w3 ")  # streamed: the reply has no end to wait for
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status and note in err.decode() and b"Traceback" not in err
    assert reply.closed.wait(10)  # the HTTP stream was closed, so the server stopped
    (user, _, _, _), (role, text, state, meta) = stored(isolated_home)
    assert user == "user" and (role, state) == ("assistant", "interrupted")
    assert text.startswith(shown.decode().strip()) and meta["server"] == fake_server.url


def test_ask_a_real_qwenchat_serve_in_a_process_without_torch(serve, isolated_home):
    probe = ("import sys; from qwenchat.cli import run; rc = run(sys.argv[1:]); "
             "sys.stderr.write('torch imported\\n' if 'torch' in sys.modules else ''); sys.exit(rc)")
    env = {**os.environ, "QWENCHAT_HOME": str(isolated_home)}
    r = subprocess.run([sys.executable, "-c", probe, "ask", "-m", serve.url, "Hello", "--max-tokens", "4",
                        "--seed", "3", "-u"], capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert b"torch imported" not in r.stderr and f"server: {serve.v1}, model tiny".encode() in r.stderr
    (_, question, _, _), (_, text, state, meta) = stored(isolated_home)
    assert (question, state, meta["server"]) == ("Hello", "complete", serve.v1)
    assert r.stdout.decode() == text + "\n"
