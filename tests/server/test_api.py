"""The OpenAI-compatible API, end to end: a real uvicorn server on 127.0.0.1 around a tiny random
Qwen2 model, driven by the official `openai` client and by raw HTTP (httpx2).

One server for the module. Where a test must act while a reply is being generated (a client
leaving mid-stream, a full queue) the backend is slowed to a known pace per chunk (`paced`),
and it records how many chunks the engine still produced after the job was cancelled."""

from __future__ import annotations

import io
import re
import threading
import time
from typing import Any

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")

from qwenchat.engine.records import Chunk, Reply  # noqa: E402
from qwenchat.server.app import ServerConfig, create_app  # noqa: E402
from qwenchat.server.backend import Backend  # noqa: E402

MAX_BODY = 64 * 1024
CONTEXT = 1024
HI = [{"role": "user", "content": "Hello, how are you today?"}]


class PacedBackend(Backend):
    """The real engine, optionally slowed to `delay` seconds per chunk and made `endless` (a reply
    that ends is followed by another, until the job is cancelled: a random model may stop after a
    token or two). It notes what happens after a cancel: `late` chunks the engine still produced
    after the cancel was set, and `cancelled_at` when the cancelled Reply came."""

    delay = 0.0
    endless = False
    late = 0
    cancelled_at: float | None = None

    def chat(self, messages, options, cancel, continue_last=False):
        first = super().chat(messages, options, cancel, continue_last)  # errors surface here, as without pacing
        return self._paced(first, lambda: super(PacedBackend, self).chat(messages, options, cancel, continue_last),
                           cancel)

    def _paced(self, events, again, cancel):
        while True:
            for event in events:
                if isinstance(event, Chunk) and cancel.is_set():
                    self.late += 1
                if isinstance(event, Reply):
                    if event.finish_reason == "cancelled":
                        self.cancelled_at = time.monotonic()
                    elif self.endless:
                        break
                yield event
                if isinstance(event, Chunk) and self.delay:
                    time.sleep(self.delay)
            else:
                return
            events = again()


@pytest.fixture(scope="module")
def server(live, tiny_model):
    from qwenchat.engine.chat import ChatEngine

    backend = PacedBackend()
    log = io.StringIO()
    app = create_app(backend, ServerConfig(max_body=MAX_BODY, queue_size=1, retry_after_s=3), log=log)
    s = live(app)
    assert httpx.get(s.url + "/health").json()["status"] == "loading"
    listing = httpx.get(s.v1 + "/models")  # not an empty list: a client would say "no model here"
    assert listing.status_code == 503 and "still loading" in listing.json()["error"]["message"]
    assert "retry-after" in listing.headers
    engine = ChatEngine.load(tiny_model, device="cpu", dtype="float32", quantize="none", max_context=CONTEXT)
    backend.attach(engine, ["tiny", tiny_model.name])
    s.backend, s.log = backend, log
    yield s


@pytest.fixture()
def client(server):
    server.backend.delay, server.backend.endless = 0.0, False
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)


def greedy(client, messages=HI, n=12, **kw):
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=n, temperature=0, **kw)


# -- the endpoints ----------------------------------------------------------------------------------


def test_health_and_models(server, client, tiny_model):
    health = httpx.get(server.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny"]  # one model, listed once (clients take each id for a model of its own)
    r = client.chat.completions.create(model=tiny_model.name, messages=HI, max_tokens=1)  # its other name
    assert r.model == tiny_model.name


def test_models_give_the_context_window(server):
    listed = httpx.get(server.v1 + "/models").json()["data"]
    assert [m["max_model_len"] for m in listed] == [CONTEXT]  # vLLM's field: clients meter the context by it
    assert abs(listed[0]["created"] - time.time()) < 24 * 3600  # when it was loaded: 0 showed as 1970


def test_continue_final_message_extends_the_last_reply(client):
    """vLLM's fields (qwenchat's remote engine sends them for F5 Continue): the reply goes on
    from the assistant's text instead of a new turn after it (which used to be appended)."""
    partial = [*HI, {"role": "assistant", "content": "Hello"}]
    new_turn = greedy(client, partial, n=3)
    more = greedy(client, partial, n=3, extra_body={"continue_final_message": True, "add_generation_prompt": False})
    # the continued prompt ends inside the reply: no end-of-turn and no new assistant header
    assert more.usage.prompt_tokens < new_turn.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as e:
        greedy(client, HI, n=1, extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert "last message to be the assistant" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        greedy(client, partial, n=1, extra_body={"continue_final_message": True, "add_generation_prompt": True})
    assert e.value.body["param"] == "add_generation_prompt"


def test_retrieve_a_model(client, tiny_model):
    for name in ("tiny", tiny_model.name):
        assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4o")
    assert e.value.body["code"] == "model_not_found"


def test_chat_completion(client):
    r = greedy(client, n=6)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == "tiny" and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 6
    assert (choice.finish_reason == "length") == (r.usage.completion_tokens == 6)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_gives_role_then_the_same_text_then_finish_and_usage(client):
    whole = greedy(client)
    chunks = list(greedy(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_stream_ends_with_done(server):
    body = {"model": "tiny", "messages": HI, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.v1 + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert lines[-1].strip() == "data: [DONE]"


def test_second_turn_reuses_the_cache(client):
    first = greedy(client, n=5)
    turn = HI + [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Tell me more."}]
    second = greedy(client, turn, n=5)
    cached = second.usage.prompt_tokens_details.cached_tokens
    # the whole first prompt at least (the tiny model's garbled reply may not re-tokenize the same)
    assert first.usage.prompt_tokens - 1 <= cached < second.usage.prompt_tokens


def test_content_parts_and_developer_role_read_like_text(client):
    plain = greedy(client, [{"role": "system", "content": "Be brief."}] + HI)
    parts = greedy(client, [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                            {"role": "user", "content": [{"type": "text", "text": HI[0]["content"]}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_an_assistant_turn_with_null_content_reads_as_empty_and_only_there(client):
    """OpenAI accepts it, and clients replay history that way (it was a 400)."""
    history = [*HI, {"role": "assistant", "content": None}, {"role": "user", "content": "Again?"}]
    empty = [*HI, {"role": "assistant", "content": ""}, {"role": "user", "content": "Again?"}]
    assert greedy(client, history).choices[0].message.content == greedy(client, empty).choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        greedy(client, [{"role": "user", "content": None}])
    assert err.value.body["param"] == "messages[0]" and "a user message needs content" in err.value.body["message"]


def test_completions_continue_raw_text(client):
    r = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens < 10 and r.usage.completion_tokens <= 5
    streamed = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=5, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_stop_string_cuts_the_reply(client):
    text = greedy(client, n=24).choices[0].message.content
    stop = next(text[i:i + 2] for i in range(3, len(text) - 2) if text[i:i + 2].strip() and "\ufffd" not in text[i:i + 2])
    r = greedy(client, n=24, stop=[stop, "never-appears"])
    assert r.choices[0].message.content == text[: text.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_same_seed_same_text(client):
    def sample(seed):
        return client.chat.completions.create(model="tiny", messages=HI, max_tokens=16, temperature=1.0,
                                              top_p=1.0, seed=seed, extra_body={"top_k": 0}).choices[0].message.content

    a, b, other = sample(7), sample(7), sample(8)
    assert a == b
    assert a != other


def test_our_sampling_extras_are_applied(client):
    # top_k 1 is greedy whatever the temperature: the extras must reach the sampler
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=10, temperature=1.5, seed=3,
                                       extra_body={"top_k": 1, "min_p": 0.0, "repetition_penalty": 1.0})
    plain = client.chat.completions.create(model="tiny", messages=HI, max_tokens=10, temperature=0,
                                           extra_body={"repetition_penalty": 1.0})
    assert r.choices[0].message.content == plain.choices[0].message.content


# -- errors -----------------------------------------------------------------------------------------


def _error(call) -> Any:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value


@pytest.mark.parametrize("extra, param", [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 2}, "n"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -0.5}, "frequency_penalty"),
    ({"extra_body": {"top_k": -2}}, "top_k"),
])
def test_bad_values_are_400_naming_the_field(client, extra, param):
    err = _error(lambda: client.chat.completions.create(model="tiny", messages=HI, **extra))
    assert err.status_code == 400
    assert err.body["param"] == param and param in err.body["message"]


def test_unknown_role_is_400(client):
    err = _error(lambda: client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}]))
    assert err.status_code == 400 and "robot" in err.body["message"] and err.body["param"] == "messages[0].role"


def test_unknown_model_is_404(client):
    err = _error(lambda: client.chat.completions.create(model="gpt-4o", messages=HI))
    assert err.status_code == 404 and err.body["code"] == "model_not_found" and "gpt-4o" in err.body["message"]


def test_prompt_longer_than_the_context_is_400_with_both_counts(client):
    err = _error(lambda: client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "fox " * 1500}],
                                                        max_tokens=8))
    assert err.status_code == 400 and err.body["code"] == "context_length_exceeded"
    assert str(CONTEXT) in err.body["message"]
    needed = int(err.body["message"].split(" needs ")[1].split()[0])
    assert needed > CONTEXT
    err = _error(lambda: client.completions.create(model="tiny", prompt="fox " * 1500, max_tokens=8))
    assert err.status_code == 400 and err.body["code"] == "context_length_exceeded"
    err = _error(lambda: client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "fox " * 1500}],
                                                        max_tokens=8, stream=True))  # before any event is sent
    assert err.status_code == 400 and err.body["code"] == "context_length_exceeded"


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    (b'{"model": "tiny"}', 400, "invalid_value"),
    (b'{"model": "tiny", "messages": "hi"}', 400, "invalid_value"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": 5}]}', 400, "invalid_value"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400, "invalid_value"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "invalid_value"),
])
def test_malformed_bodies_are_400_in_openai_shape(server, body, status, code):
    r = httpx.post(server.v1 + "/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert "Traceback" not in r.text


def test_oversized_body_is_413(server):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * MAX_BODY + b'"}]}'
    r = httpx.post(server.v1 + "/chat/completions", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit holds while reading
        yield big[: MAX_BODY // 2]
        yield big[MAX_BODY // 2:]

    r = httpx.post(server.v1 + "/chat/completions", content=chunked())
    assert r.status_code == 413


def test_unknown_route_and_method(server):
    r = httpx.get(server.v1 + "/embeddings")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = httpx.get(server.v1 + "/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_tokenize_counts_a_prompt_or_a_conversation_as_the_engine_does(server):
    """vLLM's POST /tokenize: qwenchat's own client asked it and got a 404, so its context meter
    against qwenchat serve only estimated."""
    engine = server.backend.engine
    r = httpx.post(server.url + "/tokenize", json={"model": "tiny", "prompt": "Hello there"})
    assert r.status_code == 200 and r.json()["tokens"] == engine.tokenizer.encode_plain("Hello there")
    assert r.json()["count"] == len(r.json()["tokens"]) and r.json()["max_model_len"] == CONTEXT
    r = httpx.post(server.url + "/tokenize", json={"model": "tiny", "messages": HI, "add_generation_prompt": True})
    assert r.json()["tokens"] == engine.encode_chat(HI)
    r = httpx.post(server.url + "/tokenize", json={"model": "tiny"})
    assert r.status_code == 400 and "either prompt or messages" in r.json()["error"]["message"]
    assert r.json()["error"]["message"] == "send either prompt or messages" and r.json()["error"]["param"] is None

    from qwenchat.remote.engine import RemoteEngine
    from qwenchat.remote.reference import RemoteRef

    remote = RemoteEngine.connect(RemoteRef.parse(server.v1 + "#tiny"))
    try:
        assert remote.info.exact_tokens and remote.encode_chat(HI) and len(remote.encode_chat(HI)) == len(engine.encode_chat(HI))
    finally:
        remote.close()


def test_root_and_v1_say_where_the_api_is(server):
    for url in (server.url + "/", server.v1):
        r = httpx.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert f"{server.v1}/chat/completions" in r.text and "/health" in r.text


def test_no_cors_unless_asked_for(server):
    preflight = httpx.options(server.v1 + "/chat/completions", headers={
        "Origin": "https://example.com", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    r = httpx.get(server.v1 + "/models", headers={"Origin": "https://example.com"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_every_request_gets_one_access_log_line(server, client):
    time.sleep(0.3)  # the line of the test before (written just after its response) is in
    before = server.log.getvalue().count("\n")
    greedy(client, n=3)
    httpx.get(server.url + "/nope")
    # a line is written once its response has gone out, so it may follow the client's return
    _wait(lambda: server.log.getvalue().count("\n") >= before + 2, timeout=5)
    time.sleep(0.2)
    lines = server.log.getvalue().splitlines()[before:]
    assert len(lines) == 2
    assert '"POST /v1/chat/completions" 200 prompt ' in lines[0] and "completion " in lines[0] and "tok/s" in lines[0]
    assert '"GET /nope" 404' in lines[1]


# -- a client leaving, a full queue ---------------------------------------------------------------------


def _long_stream(server):
    body = {"model": "tiny", "messages": HI, "max_tokens": 900, "temperature": 0, "stream": True}
    return httpx.stream("POST", server.v1 + "/chat/completions", json=body, timeout=60)


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_disconnect_mid_stream_cancels_within_a_token_or_two(server, client):
    server.backend.delay, server.backend.endless, server.backend.late, server.backend.cancelled_at = 0.05, True, 0, None
    with _long_stream(server) as r:
        lines = r.iter_lines()
        seen = 0
        for line in lines:
            seen += '"content"' in line
            if seen >= 3:
                break
        assert seen >= 3 and "finish_reason\": \"" not in line
        left = time.monotonic()
    _wait(lambda: server.backend.cancelled_at is not None, timeout=10)
    assert server.backend.cancelled_at - left < 2.0
    assert server.backend.late <= 2
    server.backend.delay, server.backend.endless = 0.0, False
    t0 = time.monotonic()
    assert greedy(client, n=3).usage.completion_tokens >= 1  # the next request runs at once
    assert time.monotonic() - t0 < 10
    logged = [line for line in server.log.getvalue().splitlines() if "(client disconnected)" in line][-1]
    assert re.search(r" 200 prompt \d+ \(cached \d+\) completion \d+ .* cancelled \(client disconnected\)", logged), \
        logged  # the counts of what was generated before the client left (they were missing)


def test_a_client_leaving_before_a_whole_reply_cancels_it(server, client):
    server.backend.delay, server.backend.endless, server.backend.cancelled_at = 0.05, True, None
    body = {"model": "tiny", "messages": HI, "max_tokens": 900}
    before = len(server.log.getvalue())  # the shared server's log holds earlier tests' streams that lost their client
    with pytest.raises(httpx.TimeoutException):  # the client gives up and closes the connection
        httpx.post(server.v1 + "/chat/completions", json=body, timeout=1.0)
    left = time.monotonic()
    _wait(lambda: server.backend.cancelled_at is not None, timeout=10)
    assert server.backend.cancelled_at - left < 2.0
    _wait(lambda: "cancelled (client disconnected)" in server.log.getvalue()[before:], timeout=10)
    logged = [line for line in server.log.getvalue()[before:].splitlines() if "(client disconnected)" in line][-1]
    assert '"POST /v1/chat/completions" 499 ' in logged, logged  # was 503, as if the server were busy
    server.backend.delay, server.backend.endless = 0.0, False
    assert greedy(client, n=3).usage.completion_tokens >= 1


def test_full_queue_is_503_with_retry_after(server, client):
    server.backend.delay, server.backend.endless = 0.05, True
    waiting: dict[str, Any] = {}

    def second():
        waiting["reply"] = greedy(client, n=3)

    with _long_stream(server) as r:
        lines = r.iter_lines()  # held: a dropped line iterator closes the response
        next(line for line in lines if '"content"' in line)  # the first request generates
        t = threading.Thread(target=second)
        t.start()
        _wait(lambda: httpx.get(server.url + "/health").json()["waiting"] == 1)
        third = httpx.post(server.v1 + "/chat/completions", json={"model": "tiny", "messages": HI, "max_tokens": 2})
        assert third.status_code == 503
        assert int(third.headers["retry-after"]) == 3
        assert third.json()["error"]["code"] == "server_busy"
        server.backend.delay, server.backend.endless = 0.0, False  # the waiting one ends on its own
    t.join(30)
    assert waiting["reply"].usage.completion_tokens >= 1  # the waiting one ran once the first left
