"""The start-up path with a model named by a server's URL (issue 14): connecting instead of
loading (no model lookup, no int8 read-ahead), the label that names the server's model, the key
and the timeout passed on, `-c` reconnecting to the conversation's server and model, and the
app's --api-key reaching its sessions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import qwenchat.models
from qwenchat.config import Settings
from qwenchat.engine import prefetch
from qwenchat.remote.engine import RemoteEngine
from qwenchat.remote.reference import RemoteRef
from qwenchat.startup import choose_start, load_engine
from qwenchat.store import Store
from tests.remote.conftest import fake_server  # noqa: F401  (fixture)


@pytest.fixture
def connects(monkeypatch) -> list[dict[str, Any]]:
    """RemoteEngine.connect recorded, answering with the model the server 'serves'; nothing
    local may be looked up or read ahead."""
    calls: list[dict[str, Any]] = []

    def connect(ref, api_key=None, **kw):
        calls.append({"ref": ref, "api_key": api_key, **kw})
        return SimpleNamespace(info=SimpleNamespace(name=ref.model or "served-model"))

    def forbidden(*a, **k):
        raise AssertionError("a remote model must not touch local models")

    monkeypatch.setattr(RemoteEngine, "connect", staticmethod(connect))
    monkeypatch.setattr(qwenchat.models, "resolve_model", forbidden)
    monkeypatch.setattr(prefetch, "start", forbidden)
    for var in ("QWENCHAT_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return calls


def test_a_url_connects_and_the_label_names_the_model_the_server_picked(connects):
    engine, label = load_engine(Settings(model="http://gpu-box:8000", quantize="int8", device="cpu"))
    assert label == "http://gpu-box:8000/v1#served-model"
    assert connects[0]["ref"] == RemoteRef("http://gpu-box:8000/v1", None)
    assert connects[0]["api_key"] is None and "first_token_timeout_s" not in connects[0]  # the engine's default


def test_the_key_and_the_request_timeout_are_passed_on(connects, monkeypatch):
    monkeypatch.setenv("QWENCHAT_API_KEY", "from-env")
    load_engine(Settings(model="https://h/v1#m"))
    load_engine(Settings(model="https://h/v1#m", api_key="from-settings", request_timeout=7.5))
    assert [c["api_key"] for c in connects] == ["from-env", "from-settings"]
    assert connects[1]["first_token_timeout_s"] == 7.5


def test_continue_reconnects_to_the_conversations_server_and_model(connects, isolated_home):
    with Store.open() as store:
        store.create_conversation("http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct")
        start = choose_start(store, None, True, None)
    _, label = load_engine(Settings(model=start.model))
    assert connects[0]["ref"] == RemoteRef("http://gpu-box:8000/v1", "Qwen/Qwen2-72B-Instruct")
    assert label == start.model


def test_a_real_connection_labels_the_only_model_offered(fake_server):
    engine, label = load_engine(Settings(model=fake_server.url))
    assert label == f"{fake_server.url}#m" and engine.info.server == fake_server.url


@pytest.mark.parametrize("argv", [["--api-key", "K3Y"], ["chat", "--api-key", "K3Y"]])
def test_the_apps_api_key_reaches_its_sessions(monkeypatch, isolated_home, argv):
    from typer.testing import CliRunner

    import qwenchat.startup
    import qwenchat.tui as tui
    from qwenchat.cli import app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(tui, "run_app", lambda factory, **kw: seen.update(factory=factory))
    monkeypatch.setattr(qwenchat.startup, "load_engine",
                        lambda settings, progress=None, resolved=None: (_ for _ in ()).throw(RuntimeError(settings.api_key)))
    result = CliRunner().invoke(app, ["-m", "http://h:1/v1", *argv] if argv[0] != "chat" else argv)
    assert result.exit_code == 0, result.output
    with pytest.raises(RuntimeError, match="K3Y"):
        seen["factory"]("http://h:1/v1", None, None)
