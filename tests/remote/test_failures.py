"""Every failure of issue 14's list, produced by the scripted fake server (or a closed port, an
unknown host, TLS against plain HTTP), answered by a RemoteError whose message names the problem
and whose hint names the fix; the key never appears in either."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from qwenchat.remote import errors
from qwenchat.remote.engine import RemoteEngine
from qwenchat.remote.reference import RemoteRef
from tests.remote.fake_server import Response, chunk, error, reply_events

HI = [{"role": "user", "content": "hi"}]
KEY = "sk-test-0123456789-secret"


def connect(server, key=None, **kw) -> RemoteEngine:
    return RemoteEngine.connect(RemoteRef.parse(server.url), key, **kw)


def failure(make, kind=errors.RemoteError) -> errors.RemoteError:
    with pytest.raises(kind) as e:
        result = make()
        if not isinstance(result, RemoteEngine):
            list(result)
    text = str(e.value)
    assert KEY not in text and "\n  hint: " in text, text
    return e.value


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- no connection ---------------------------------------------------------------------------------


def test_connection_refused_names_host_and_port():
    port = free_port()
    e = failure(lambda: RemoteEngine.connect(RemoteRef.parse(f"http://127.0.0.1:{port}/v1")), errors.ConnectError)
    assert e.message == f"connection refused by 127.0.0.1:{port}: no server is listening there"
    assert "start the server" in e.hint


def test_unknown_host_names_the_host():
    e = failure(lambda: RemoteEngine.connect(RemoteRef.parse("http://gpu-box.invalid:8000/v1")), errors.ConnectError)
    assert e.message == "unknown host 'gpu-box.invalid'"


def test_tls_against_a_plain_http_server_says_tls(fake_server):
    url = fake_server.url.replace("http://", "https://")
    e = failure(lambda: RemoteEngine.connect(RemoteRef.parse(url)), errors.ConnectError)
    assert e.message.startswith("TLS failed with 127.0.0.1:")
    assert "http://" in e.hint


# -- statuses --------------------------------------------------------------------------------------


def test_401_without_a_key_says_which_variables_to_set(fake_server):
    # what a server says then is about the client's placeholder key: qwenchat serve said "wrong"
    fake_server.routes["GET /v1/models"] = lambda req: error(401, "the API key is wrong", code="invalid_api_key")
    e = failure(lambda: connect(fake_server), errors.AuthError)
    assert "needs an API key and none was given" in e.message and "wrong" not in e.message
    assert "QWENCHAT_API_KEY" in e.hint and "--api-key" in e.hint


def test_401_with_a_key_says_it_was_refused_and_never_shows_it(fake_server):
    fake_server.routes["GET /v1/models"] = lambda req: error(401, f"Incorrect API key provided: {KEY}")
    e = failure(lambda: connect(fake_server, KEY), errors.AuthError)
    assert "refused the API key (401)" in e.message and "***" in e.message
    assert fake_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"  # it was sent, never shown


def test_403_says_the_key_is_not_allowed(fake_server):
    fake_server.reply("x")
    engine = connect(fake_server, KEY)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(403, "forbidden for this project")
    e = failure(lambda: engine.chat(HI), errors.AuthError)
    assert "does not allow this key" in e.message and "(403)" in e.message


def test_404_for_the_model_points_to_qwenchat_models(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(
        404, "The model `m` does not exist.", param="model", code="model_not_found")
    e = failure(lambda: engine.chat(HI), errors.NotFoundError)
    assert e.message.startswith(f"{fake_server.url} does not serve model 'm'")
    assert f"qwenchat models --server {fake_server.url}" in e.hint


def test_404_for_the_route_says_check_the_url(fake_server):
    fake_server.routes["GET /v1/models"] = lambda req: Response(404, "Not Found", content_type="text/plain")
    e = failure(lambda: connect(fake_server), errors.NotFoundError)
    assert "has no such endpoint (404)" in e.message
    assert "/v1" in e.hint


def test_5xx_quotes_the_server_and_says_try_again(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(503, "CUDA out of memory")
    e = failure(lambda: engine.chat(HI), errors.ServerFailedError)
    assert e.message == f"{fake_server.url} failed (503) (the server says: CUDA out of memory)"
    assert "server's log" in e.hint


def test_another_400_quotes_the_server(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(
        400, "This model's maximum context length is 2048 tokens.")
    e = failure(lambda: engine.chat(HI), errors.RefusedError)
    assert "too long for the model" in e.message and "maximum context length is 2048 tokens" in e.message
    assert "new conversation" in e.hint
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(400, "messages[0].content: bad")
    e = failure(lambda: engine.chat(HI), errors.RefusedError)
    assert e.message == f"{fake_server.url} refused the request (400) (the server says: messages[0].content: bad)"


# -- 429: bounded retries honouring Retry-After -----------------------------------------------------


def test_429_is_retried_after_retry_after_then_succeeds(fake_server):
    engine = connect(fake_server)
    answers = [error(429, "slow down", **{"Retry-After": "0.3"}), Response(events=reply_events("ok"))]
    fake_server.routes["POST /v1/chat/completions"] = lambda req: answers.pop(0)
    t0 = time.monotonic()
    out = list(engine.chat(HI))
    assert out[-1].text == "ok"
    assert time.monotonic() - t0 >= 0.3
    assert sum(r.path == "/v1/chat/completions" for r in fake_server.requests) == 2


def test_429_gives_up_after_three_tries(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(429, "rate limited", **{"Retry-After": "0"})
    e = failure(lambda: engine.chat(HI), errors.BusyError)
    assert "busy (429, too many requests) after 3 tries" in e.message and "rate limited" in e.message
    assert sum(r.path == "/v1/chat/completions" for r in fake_server.requests) == 3


def test_429_asking_for_longer_than_the_budget_is_not_waited_for(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(429, "busy", **{"Retry-After": "120"})
    t0 = time.monotonic()
    e = failure(lambda: engine.chat(HI), errors.BusyError)
    assert time.monotonic() - t0 < 5
    assert "after 1 try; it asks to wait 120 s more" in e.message
    assert sum(r.path == "/v1/chat/completions" for r in fake_server.requests) == 1


def test_a_server_still_loading_its_model_is_waited_for(fake_server):
    """`qwenchat serve` answers 503 with Retry-After while it loads: `ask` right after starting it
    failed at once."""
    answers = [error(503, "the model is still loading", **{"Retry-After": "0.2"})] * 2
    fake_server.routes["GET /v1/models"] = lambda req: answers.pop(0) if answers else Response(
        200, {"object": "list", "data": fake_server.models})
    t0 = time.monotonic()
    engine = connect(fake_server)
    assert engine.model.id == "m" and time.monotonic() - t0 >= 0.4
    assert sum(r.path == "/v1/models" for r in fake_server.requests) == 3


def test_a_full_queue_is_asked_again_like_a_429_and_other_503s_are_not(fake_server):
    engine = connect(fake_server)
    answers = [error(503, "the queue is full", **{"Retry-After": "0.2"}), Response(events=reply_events("ok"))]
    fake_server.routes["POST /v1/chat/completions"] = lambda req: answers.pop(0)
    assert list(engine.chat(HI))[-1].text == "ok"
    fake_server.routes["GET /v1/models"] = lambda req: error(503, "down")
    e = failure(lambda: connect(fake_server), errors.ServerFailedError)  # no Retry-After: not waited for
    assert "failed (503)" in e.message
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(503, "full", **{"Retry-After": "0"})
    e = failure(lambda: engine.chat(HI), errors.BusyError)
    assert "busy (503, unavailable) after 3 tries" in e.message


def test_cancel_while_waiting_to_retry_ends_the_reply_cancelled(fake_server):
    engine = connect(fake_server)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(429, "busy", **{"Retry-After": "10"})
    out = list(engine.chat(HI, cancel=cancel))
    assert out == [out[-1]] and out[-1].finish_reason == "cancelled"
    assert time.monotonic() - t0 < 5


# -- time and streams ------------------------------------------------------------------------------


def test_no_first_token_within_the_timeout(fake_server):
    engine = connect(fake_server, first_token_timeout_s=0.5)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=reply_events("late"), delay=3)
    t0 = time.monotonic()
    e = failure(lambda: engine.chat(HI), errors.RemoteTimeoutError)
    assert time.monotonic() - t0 < 2.5
    assert e.message == f"{fake_server.url} sent no answer within 0.5 s"
    assert "request_timeout" in e.hint


def test_a_stream_cut_mid_reply_keeps_what_came(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(
        events=[chunk("Hello"), chunk(" there")], cut=True)
    got: list[str] = []
    with pytest.raises(errors.StreamCutError) as e:
        for event in engine.chat(HI):
            got.append(event.text)
    assert got == ["Hello", " there"]
    assert "lost mid-reply" in e.value.message and "partial reply is kept" in e.value.hint


def test_a_server_hanging_up_before_the_reply_is_not_called_unreachable(fake_server):
    """Seen hands-on: a server killed after the request was sent read "cannot connect ... check that
    the server is running", though the connection had been made."""
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(hang_up=True)
    e = failure(lambda: engine.chat(HI), errors.ConnectError)
    assert "closed the connection before the reply began" in e.message and "cannot connect" not in e.message
    assert "stopped, restarted or crashed" in e.hint


def test_a_stream_that_ends_without_a_finish_reason_was_cut(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=[chunk("Hel")], done=False)
    e = failure(lambda: engine.chat(HI), errors.StreamCutError)
    assert "ended before it was complete" in e.message


# -- not the OpenAI format -------------------------------------------------------------------------


@pytest.mark.parametrize("response,what", [
    (Response(200, "<html><body>Welcome to nginx!</body></html>", content_type="text/html"), "an HTML page"),
    (Response(200, "hello", content_type="text/plain"), "text/plain that is not JSON"),
    (Response(200, {"models": ["a"]}), "JSON without a list of models under 'data'"),
])
def test_models_not_in_the_openai_format(fake_server, response, what):
    fake_server.routes["GET /v1/models"] = lambda req: response
    e = failure(lambda: connect(fake_server), errors.FormatError)
    assert e.message == f"{fake_server.url} did not answer in the OpenAI format (it sent {what})"


@pytest.mark.parametrize("response,what", [
    (Response(200, "<html>login</html>", content_type="text/html"), "an HTML page"),
    (Response(200, {"id": "x", "choices": []}), "application/json instead of a stream"),
    (Response(events=["not json at all"]), "a stream event that is not JSON"),
    (Response(events=[{"text": "hi"}]), "stream events without 'choices'"),
])
def test_chat_answers_not_in_the_openai_format(fake_server, response, what):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: response
    e = failure(lambda: engine.chat(HI), errors.FormatError)
    assert e.message.endswith(f"(it sent {what})")


@pytest.mark.parametrize("event", [{"error": {"message": "engine crashed"}},
                                   {"object": "error", "message": "engine crashed", "code": 500}])
def test_an_error_event_mid_reply_cuts_the_stream_and_quotes_the_server(fake_server, event):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=[chunk("Hi"), event])
    got: list[str] = []
    with pytest.raises(errors.StreamCutError) as e:
        for record in engine.chat(HI):
            got.append(record.text)
    assert got == ["Hi"]
    assert e.value.message == f"{fake_server.url} reported an error mid-reply: engine crashed"


def test_an_error_event_before_any_text_is_a_server_failure(fake_server):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=[{"error": {"message": "boom"}}])
    e = failure(lambda: engine.chat(HI), errors.ServerFailedError)
    assert e.message == f"{fake_server.url} reported an error: boom"


def test_a_connect_timeout_is_a_connection_problem_not_a_slow_first_token():
    import httpx2
    import openai

    from qwenchat.remote.failures import translate

    request = httpx2.Request("POST", "http://10.0.0.9:8000/v1/chat/completions")
    try:
        try:
            raise httpx2.ConnectTimeout("timed out", request=request)
        except httpx2.ConnectTimeout:
            raise openai.APITimeoutError(request=request)  # as the client raises it: with its cause chained
    except openai.APITimeoutError as exc:
        e = translate(exc, RemoteRef.parse("http://10.0.0.9:8000/v1"), None, timeout_s=120)
    assert isinstance(e, errors.ConnectError)
    assert e.message == "no connection to 10.0.0.9:8000: it did not answer in time"


@pytest.mark.parametrize("value", ["nan", "inf", "1e9"])
def test_a_nonsense_retry_after_is_not_waited_for(fake_server, value):
    engine = connect(fake_server)
    fake_server.routes["POST /v1/chat/completions"] = lambda req: error(429, "busy", **{"Retry-After": value})
    t0 = time.monotonic()
    failure(lambda: engine.chat(HI), errors.BusyError)
    assert time.monotonic() - t0 < 5
