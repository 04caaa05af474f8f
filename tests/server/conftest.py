"""A real uvicorn server on 127.0.0.1 (a free port), in a thread of the test process, around the
app `create_app` builds; stopped (and its generation queue closed) at teardown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the server tests need the 'serve' extra: pip install -e '.[test,serve]'")


@dataclass
class LiveServer:
    app: Any
    url: str  # http://127.0.0.1:PORT
    server: Any
    thread: threading.Thread

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.app.state.queue.close()
        self.server.should_exit = True
        self.thread.join(15)


def start(app: Any) -> LiveServer:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, chosen by the system and held from here on
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return LiveServer(app, f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread)


@pytest.fixture(scope="module")
def live() -> Iterator[Any]:
    """Start servers for a module; all stop at its end."""
    started: list[LiveServer] = []

    def run(app: Any) -> LiveServer:
        s = start(app)
        started.append(s)
        return s

    yield run
    for s in started:
        s.stop()
