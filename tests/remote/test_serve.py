"""The remote backend against a real `qwenchat serve` on the tiny model: model picking,
streaming, usage with cached tokens, cancel, raw completion, and the session on top."""

from __future__ import annotations

import io
import threading

import pytest

from qwenchat.engine.records import Chunk, GenerateOptions, Reply
from qwenchat.remote.engine import RemoteEngine
from qwenchat.remote.errors import NotFoundError, RemoteError
from qwenchat.remote.reference import RemoteRef

GREEDY = GenerateOptions(temperature=0.0, max_new_tokens=8)
HI = [{"role": "user", "content": "Hello, how are you today?"}]


def events(stream):
    out = list(stream)
    assert all(isinstance(e, Chunk) for e in out[:-1]) and isinstance(out[-1], Reply)
    return out[:-1], out[-1]


@pytest.fixture()
def engine(serve):
    serve.backend.model_ids = ("tiny",)
    e = RemoteEngine.connect(RemoteRef.parse(serve.v1), first_token_timeout_s=60)
    yield e
    e.close()


def test_connect_picks_the_only_model_and_reports_the_server(engine, serve):
    assert engine.info.name == "tiny"
    assert engine.info.server == serve.v1
    assert engine.info.device == "remote"


def test_chat_streams_the_servers_reply_with_its_usage(engine):
    chunks, reply = events(engine.chat(HI, GREEDY))
    assert reply.text == "".join(c.text for c in chunks)
    assert reply.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.timings.ttft_s > 0


def test_a_second_turn_reports_the_servers_cached_tokens(engine):
    _, first = events(engine.chat(HI, GREEDY))
    follow = HI + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And then?"}]
    _, second = events(engine.chat(follow, GREEDY))
    assert second.usage.cached_tokens >= first.usage.prompt_tokens - 1  # the first turn was reused
    assert second.usage.prefilled_tokens == second.usage.prompt_tokens - second.usage.cached_tokens
    assert second.usage.prefilled_tokens < second.usage.prompt_tokens


def test_cancel_ends_the_reply_cancelled_and_the_server_takes_the_next(engine):
    cancel = threading.Event()
    out = []
    for event in engine.chat(HI, GenerateOptions(temperature=1.0, seed=7, max_new_tokens=400), cancel):
        out.append(event)
        cancel.set()
    assert len(out) == 2 and out[-1].finish_reason == "cancelled" and out[-1].text == out[0].text
    _, reply = events(engine.chat(HI, GREEDY))  # the server is free again
    assert reply.finish_reason in ("stop", "length")


def test_complete_continues_raw_text(engine):
    chunks, reply = events(engine.complete("def add(a, b):", GenerateOptions(temperature=0.0, max_new_tokens=5)))
    assert reply.text == "".join(c.text for c in chunks)
    assert 1 <= reply.usage.completion_tokens <= 5 and reply.usage.prompt_tokens > 0


def test_settings_reach_the_server(engine):
    _, reply = events(engine.chat(HI, GenerateOptions(temperature=0.0, max_new_tokens=1)))
    assert reply.usage.completion_tokens == 1 and reply.finish_reason == "length"


def test_several_models_need_a_name(serve):
    serve.backend.model_ids = ("tiny", "tiny-alias")
    with pytest.raises(RemoteError) as e:
        RemoteEngine.connect(RemoteRef.parse(serve.v1))
    assert e.value.message == f"{serve.v1} offers 2 models: tiny, tiny-alias"
    assert e.value.hint == f"name one: -m {serve.v1}#tiny"
    named = RemoteEngine.connect(RemoteRef.parse(serve.v1 + "#tiny-alias"))
    assert named.info.name == "tiny-alias"
    _, reply = events(named.chat(HI, GREEDY))
    assert reply.usage.completion_tokens >= 1
    with pytest.raises(NotFoundError, match="does not offer model 'nope'; it offers tiny, tiny-alias"):
        RemoteEngine.connect(RemoteRef.parse(serve.v1 + "#nope"))


def test_the_session_chats_through_the_remote_engine(engine):
    from qwenchat.session import ChatSession

    session = ChatSession(engine, None, model_label=RemoteRef(engine.info.server, "tiny").label,
                          options=GenerateOptions(temperature=0.0, max_new_tokens=6))
    turn = list(session.send("Hello there"))[-1]
    assert turn.reply.usage.completion_tokens >= 1
    assert [e.role for e in session.entries] == ["user", "assistant"]
    assert session.context_used() > 0


def test_a_model_gone_from_the_server_is_a_404_naming_it(engine, serve):
    serve.backend.model_ids = ("renamed",)
    try:
        with pytest.raises(NotFoundError) as e:
            list(engine.chat(HI, GREEDY))
    finally:
        serve.backend.model_ids = ("tiny",)
    assert e.value.message.startswith(f"{serve.v1} does not serve model 'tiny'")
    assert "qwenchat models --server" in e.value.hint


def test_a_server_started_with_a_key_wants_it(serve):
    from qwenchat.server.app import ServerConfig, create_app
    from qwenchat.remote.errors import AuthError
    from tests.server.conftest import start

    keyed = start(create_app(serve.backend, ServerConfig(api_key="sk-serve-key-42"), log=io.StringIO()))
    try:
        with pytest.raises(AuthError, match="needs an API key and none was given"):
            RemoteEngine.connect(RemoteRef.parse(keyed.v1))
        with pytest.raises(AuthError, match="refused the API key") as e:
            RemoteEngine.connect(RemoteRef.parse(keyed.v1), "sk-wrong-key-7")
        assert "sk-wrong-key-7" not in str(e.value)
        engine = RemoteEngine.connect(RemoteRef.parse(keyed.v1), "sk-serve-key-42")
        _, reply = events(engine.chat(HI, GREEDY))
        assert reply.usage.completion_tokens >= 1
    finally:
        keyed.stop()
