"""The remote backend against a real `qwenchat serve` on the tiny model: model picking,
streaming, usage with cached tokens, cancel, raw completion, and the session on top."""

from __future__ import annotations

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
