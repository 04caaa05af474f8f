"""What the session shows and stores about a remote model (issue 14): the server and model of
every reply, no local-only field (dtype) made up, and the engine's notes passed on once. Runs
the real session and store over the scripted fake engine dressed as a remote one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qwenchat.session import ChatSession, Turn
from qwenchat.store import Store
from tests.fake_engine import FakeEngine, FakeInfo

SERVER = "http://gpu-box:8000/v1"


@dataclass(frozen=True)
class RemoteLikeInfo:
    """The fields of qwenchat.remote's RemoteInfo the session reads."""

    name: str = "Qwen/Qwen2-72B-Instruct"
    path: Path | None = None
    device: str = "remote"
    dtype: str = ""
    placement_reason: str = f"server {SERVER}"
    context_window: int = 32768
    has_chat_template: bool = True
    chat_tuned: bool = True
    load_s: float = 0.1
    quantize: str = "none"
    notes: tuple[str, ...] = ()
    server: str = SERVER
    exact_tokens: bool = False


@dataclass
class NotingEngine(FakeEngine):
    """A fake engine with notes to give, like RemoteEngine's refused settings."""

    pending: list[str] = field(default_factory=list)

    def take_notes(self) -> list[str]:
        out, self.pending = self.pending, []
        return out


@pytest.fixture
def store(isolated_home):
    with Store.open() as s:
        yield s


def finish(events) -> Turn:
    *_, turn = events
    return turn


def test_model_info_names_the_server_and_says_counts_are_estimates(store):
    s = ChatSession(FakeEngine(info=RemoteLikeInfo()), store, model_label=f"{SERVER}#Qwen/Qwen2-72B-Instruct")
    info = s.model_info
    assert (info.server, info.exact_tokens, info.device, info.context_window) == (SERVER, False, "remote", 32768)
    assert info.precision == ""  # nothing only a local engine knows is made up
    local = ChatSession(FakeEngine(), store).model_info
    assert (local.server, local.exact_tokens) == (None, True)


def test_every_reply_records_its_server_and_model_and_no_dtype(store):
    label = f"{SERVER}#Qwen/Qwen2-72B-Instruct"
    s = ChatSession(FakeEngine(info=RemoteLikeInfo()), store, model_label=label)
    turn = finish(s.send("Hello"))
    meta = store.get_message(turn.message_id).meta
    assert meta["server"] == SERVER and meta["model"] == label and meta["device"] == "remote"
    assert "dtype" not in meta
    assert store.get_conversation(turn.conversation_id).model == label


def test_a_local_reply_keeps_its_device_and_dtype_and_has_no_server(store):
    turn = finish(ChatSession(FakeEngine(), store).send("Hello"))
    meta = store.get_message(turn.message_id).meta
    assert (meta["device"], meta["dtype"]) == ("cpu", "float32") and "server" not in meta


def test_an_interrupted_remote_reply_records_its_server_too(store):
    s = ChatSession(FakeEngine(info=RemoteLikeInfo(), default="one two three four"), store, model_label=SERVER)
    events = s.send("Hello")
    next(events)
    events.close()  # Ctrl+C mid-reply
    reply = store.thread(s.conversation_id)[-1]
    assert reply.status == "interrupted" and reply.meta["server"] == SERVER


def test_engine_notes_reach_the_face_once(store):
    engine = NotingEngine(info=RemoteLikeInfo())
    s = ChatSession(engine, store)
    engine.pending.append("the server does not accept min_p: sent without it")
    finish(s.send("Hello"))
    assert s.take_notes() == ["the server does not accept min_p: sent without it"]
    assert s.take_notes() == []


def test_a_local_engine_has_no_notes_to_take(store):
    assert ChatSession(FakeEngine(info=FakeInfo()), store).take_notes() == []
