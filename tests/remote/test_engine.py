"""RemoteEngine against the scripted fake server: what a request carries, the settings a server
refuses (dropped, sent once more, reported once), cancel, estimates where the server reports no
usage, and that nothing is sent before the first next()."""

from __future__ import annotations

import threading
import time

import pytest

from qwenchat.engine.errors import SettingsError
from qwenchat.engine.records import Chunk, GenerateOptions, Reply
from qwenchat.remote.engine import RemoteEngine
from qwenchat.remote.reference import RemoteRef
from tests.remote.fake_server import Response, chunk, error, reply_events

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture()
def engine(fake_server):
    e = RemoteEngine.connect(RemoteRef.parse(fake_server.url))
    yield e
    e.close()


def posts(server):
    return [r for r in server.requests if r.method == "POST" and r.path.startswith("/v1/")]


def test_nothing_is_sent_before_the_first_next(fake_server, engine):
    fake_server.reply("ok")
    stream = engine.chat(HI)
    assert posts(fake_server) == []
    assert [e.text for e in stream] == ["ok", "ok"]
    assert len(posts(fake_server)) == 1


def test_settings_map_to_api_fields_and_extra_body(fake_server, engine):
    fake_server.reply("ok")
    options = GenerateOptions(temperature=0.3, top_p=0.9, top_k=5, min_p=0.1, repetition_penalty=1.1,
                              max_new_tokens=7, seed=3, stop=("END",), constraint="json_object")
    list(engine.chat(HI, options))
    body = posts(fake_server)[-1].body
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens",
                                 "seed", "stop", "response_format", "stream")} == dict(
        temperature=0.3, top_p=0.9, top_k=5, min_p=0.1, repetition_penalty=1.1, max_tokens=7, seed=3,
        stop=["END"], response_format={"type": "json_object"}, stream=True)
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "m" and body["messages"] == HI


def test_unset_settings_are_left_to_the_server(fake_server, engine):
    fake_server.reply("ok")
    list(engine.chat(HI))
    assert set(posts(fake_server)[-1].body) == {"model", "messages", "stream", "stream_options"}


def test_a_refused_setting_is_dropped_sent_once_more_and_reported_once(fake_server, engine):
    def route(req):
        if "top_k" in req.body:
            return error(400, "top_k is not supported by this server", param="top_k")
        return Response(events=reply_events("fine"))

    fake_server.routes["POST /v1/chat/completions"] = route
    options = GenerateOptions(top_k=5, temperature=0.2)
    assert list(engine.chat(HI, options))[-1].text == "fine"
    assert ["top_k" in r.body for r in posts(fake_server)] == [True, False]
    notes = engine.take_notes()
    assert len(notes) == 1 and "'top_k'" in notes[0] and "not sent" in notes[0]
    assert posts(fake_server)[-1].body["temperature"] == 0.2  # the others still go
    list(engine.chat(HI, options))
    assert len(posts(fake_server)) == 3 and "top_k" not in posts(fake_server)[-1].body  # not tried again
    assert engine.take_notes() == []  # said once


def test_a_400_naming_no_field_is_not_retried(fake_server, engine):
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(400, "something else is wrong")
    with pytest.raises(Exception, match="something else is wrong"):
        list(engine.chat(HI, GenerateOptions(top_k=5)))
    assert len(posts(fake_server)) == 1


def test_a_server_refusing_stream_options_gives_estimates(fake_server, engine):
    def route(req):
        if "stream_options" in req.body:
            return error(400, "Unrecognized request argument supplied: stream_options")
        return Response(events=reply_events("one two three four"))

    fake_server.routes["POST /v1/chat/completions"] = route
    reply = list(engine.chat(HI))[-1]
    assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens >= 1
    assert reply.usage.cached_tokens == 0
    assert "estimates" in engine.take_notes()[0]


def test_usage_and_cached_tokens_come_from_the_server(fake_server, engine):
    fake_server.reply("a", "b", usage={"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52,
                                       "prompt_tokens_details": {"cached_tokens": 32}})
    reply = list(engine.chat(HI))[-1]
    assert (reply.usage.prompt_tokens, reply.usage.cached_tokens, reply.usage.prefilled_tokens,
            reply.usage.completion_tokens) == (50, 32, 18, 2)


def test_length_finish_reason_is_kept(fake_server, engine):
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(
        events=[chunk("cut"), chunk(finish="length")])
    assert list(engine.chat(HI))[-1].finish_reason == "length"


def test_cancel_closes_the_stream_within_a_chunk(fake_server, engine):
    sent: list[float] = []

    def endless():
        for i in range(200):
            sent.append(time.monotonic())
            yield chunk(f"w{i} ")

    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=endless(), delay=0.05)
    cancel = threading.Event()
    seen = []
    for event in engine.chat(HI, cancel=cancel):
        seen.append(event)
        if len(seen) == 3:
            cancel.set()
            cancelled_at = time.monotonic()
    assert isinstance(seen[-1], Reply) and seen[-1].finish_reason == "cancelled"
    assert len(seen) == 4 and seen[-1].text == "w0 w1 w2 "  # nothing read after the cancel
    time.sleep(0.5)  # the server notices the closed connection at its next writes
    # after the cancel: the event in flight, then a write or two the closed socket still takes
    assert sum(t > cancelled_at for t in sent) <= 4 and len(sent) < 30


def test_settings_out_of_range_are_refused_before_sending(fake_server, engine):
    with pytest.raises(SettingsError, match="temperature is 500"):
        engine.chat(HI, GenerateOptions(temperature=500.0))
    assert engine.settings(GenerateOptions(max_new_tokens=9)) == 9
    assert engine.settings(None) is None
    assert posts(fake_server) == []


def test_defaults_leave_everything_to_the_server(engine):
    assert engine.defaults.max_new_tokens is None
    assert all(v is None for v in vars(engine.defaults.sampling).values())


def test_continue_last_asks_to_extend_the_final_message(fake_server, engine):
    fake_server.reply(" more")
    convo = HI + [{"role": "assistant", "content": "Part"}]
    assert list(engine.chat(convo, continue_last=True))[-1].text == " more"
    body = posts(fake_server)[-1].body
    assert body["messages"][-1] == {"role": "assistant", "content": "Part"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    with pytest.raises(SettingsError, match="no reply to continue"):
        engine.chat(HI, continue_last=True)


def test_complete_streams_text_completions(fake_server, engine):
    fake_server.routes["POST /v1/completions"] = lambda req: Response(events=[
        {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": " world", "finish_reason": None}]},
        {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]},
    ])
    out = list(engine.complete("Hello", GenerateOptions(max_new_tokens=3)))
    assert [e.text for e in out if isinstance(e, Chunk)] == [" world"] and out[-1].text == " world"
    assert posts(fake_server)[-1].body["prompt"] == "Hello" and posts(fake_server)[-1].body["max_tokens"] == 3


def test_cancel_before_the_first_token_ends_at_once(fake_server):
    engine = RemoteEngine.connect(RemoteRef.parse(fake_server.url), first_token_timeout_s=30)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=reply_events("late"), delay=2)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    t0 = time.monotonic()
    out = list(engine.chat(HI, cancel=cancel))
    assert time.monotonic() - t0 < 1.5  # not the 2 s the server takes to its first token
    assert len(out) == 1 and out[0].finish_reason == "cancelled" and out[0].text == ""


def test_a_fastapi_style_422_naming_a_field_drops_it_too(fake_server, engine):
    def route(req):
        if "min_p" in req.body:
            return Response(422, {"detail": [{"loc": ["body", "min_p"], "msg": "extra fields not permitted",
                                              "type": "value_error.extra"}]})
        return Response(events=reply_events("ok"))

    fake_server.routes["POST /v1/chat/completions"] = route
    assert list(engine.chat(HI, GenerateOptions(min_p=0.05)))[-1].text == "ok"
    assert engine.take_notes() == ["the server refused the setting 'min_p', so it is not sent "
                                   "(it said: min_p: extra fields not permitted)"]
