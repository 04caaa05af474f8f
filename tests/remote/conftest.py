"""Servers for the remote backend's tests: a real `qwenchat serve` around the tiny model (one per
module), and `fake_server`, a scripted OpenAI-like server on 127.0.0.1 (tests/remote/fake_server.py)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest


from tests.remote.fake_server import FakeServer  # noqa: E402

CONTEXT = 1024


@pytest.fixture(scope="module")
def serve(tiny_model) -> Iterator[Any]:
    """A real `qwenchat serve` (uvicorn in a thread) for the module, offering the tiny model as
    "tiny"; `serve.backend` is its Backend (tests may re-attach names)."""
    pytest.importorskip("uvicorn", reason="needs the 'serve' extra: pip install -e '.[test,serve]'")
    from qwenchat.engine.chat import ChatEngine
    from qwenchat.server.app import ServerConfig, create_app
    from qwenchat.server.backend import Backend
    from tests.server.conftest import start

    backend = Backend()
    app = create_app(backend, ServerConfig(queue_size=4), log=io.StringIO())
    server = start(app)
    engine = ChatEngine.load(tiny_model, device="cpu", dtype="float32", quantize="none", max_context=CONTEXT)
    backend.attach(engine, ["tiny"])
    server.backend = backend
    yield server
    server.stop()


@pytest.fixture()
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture()
def ask_without_input(monkeypatch) -> None:
    """`qwenchat ask` run in process as from a pipe with nothing in it (the PROMPT is the
    message), and no API key from the environment."""
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    for var in ("QWENCHAT_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
