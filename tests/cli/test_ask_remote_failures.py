"""Every failure of issue 14's list through `qwenchat ask -m URL` (in process, against the
scripted fake server of tests/remote, a closed port or an unknown host): a one-line message,
exit status 1, no key shown, and the user's message in the history, whether the failure came
before any reply could begin (connecting) or during one (the partial reply kept as interrupted)."""

from __future__ import annotations

import io
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

from qwenchat.cli import run
from qwenchat.store import Store
from tests.remote.conftest import ask_without_input, fake_server  # noqa: F401  (fixture)
from tests.remote.fake_server import FakeServer, Response, chunk, error, reply_events

QUESTION = "my question"
KEY = "sk-failures-0123456789"
CHAT = "POST /v1/chat/completions"


pytestmark = pytest.mark.usefixtures("ask_without_input")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def history() -> list[tuple[str, str, str, str]]:
    with Store.open() as store:
        return [(c.model, m.role, m.content, m.status) for c in store.list_conversations()
                for m in store.thread(c.id)]


def on_chat(response: Response) -> Callable[[FakeServer], list[str]]:
    def setup(server: FakeServer) -> list[str]:
        server.routes[CHAT] = lambda req: response
        return [server.url]
    return setup


def on_models(response: Response) -> Callable[[FakeServer], list[str]]:
    def setup(server: FakeServer) -> list[str]:
        server.routes["GET /v1/models"] = lambda req: response
        return [server.url]
    return setup


CASES: dict[str, tuple[Callable[[FakeServer], list[str]], str]] = {
    "connection refused": (lambda s: [f"http://127.0.0.1:{closed_port()}/v1"], "connection refused by 127.0.0.1:"),
    "unknown host": (lambda s: ["http://gpu-box.invalid:8000/v1"], "unknown host 'gpu-box.invalid'"),
    "TLS": (lambda s: [s.url.replace("http://", "https://")], "TLS failed with 127.0.0.1:"),
    "401 no key": (on_models(error(401, "missing key")), "needs an API key and none was given"),
    "401 wrong key": (lambda s: on_models(error(401, "bad key"))(s) + ["--api-key", KEY], "refused the API key (401)"),
    "403": (on_chat(error(403, "not for you")), "does not allow this key to do that (403)"),
    "404 model": (lambda s: [f"{s.url}#Qwen/Qwen2-72B-Instruct"], "does not offer model 'Qwen/Qwen2-72B-Instruct'"),
    "404 model at chat": (on_chat(error(404, "The model `m` does not exist.", code="model_not_found")),
                          "does not serve model 'm'"),
    "404 route": (lambda s: [s.url], "has no such endpoint (404)"),  # the fake server has no chat route
    "5xx": (on_chat(error(503, "overloaded")), "failed (503) (the server says: overloaded)"),
    "not OpenAI (models)": (on_models(Response(200, "<html>Welcome to nginx!</html>", content_type="text/html")),
                            "did not answer in the OpenAI format (it sent an HTML page)"),
    "not OpenAI (chat)": (on_chat(Response(200, {"id": "x", "choices": []})),
                          "did not answer in the OpenAI format (it sent application/json instead of a stream)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_failure_is_one_clear_line_exit_1_and_the_message_is_kept(fake_server, capsys, case):
    setup, expected = CASES[case]
    args = setup(fake_server)
    assert run(["ask", "-m", *args, QUESTION]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert "hint: " in err and "Traceback" not in err and KEY not in err
    assert [(role, text) for _, role, text, _ in history()] == [("user", QUESTION)]


def test_429_is_retried_a_bounded_number_of_times_then_said(fake_server, capsys):
    fake_server.routes[CHAT] = lambda req: error(429, "slow down", **{"Retry-After": "0"})
    assert run(["ask", "-m", fake_server.url, QUESTION]) == 1
    assert "is busy (429, too many requests) after 3 tries" in capsys.readouterr().err
    assert len([r for r in fake_server.requests if r.path.endswith("/completions")]) == 3
    assert [m[1:3] for m in history()] == [("user", QUESTION)]


def test_429_then_an_answer_honours_retry_after(fake_server, capsys):
    answers = iter([error(429, "slow down", **{"Retry-After": "0.2"}), Response(events=reply_events("at last"))])
    fake_server.routes[CHAT] = lambda req: next(answers)
    assert run(["ask", "-m", fake_server.url, QUESTION]) == 0
    assert capsys.readouterr().out == "at last\n"


def test_no_first_token_within_request_timeout(fake_server, capsys):
    assert run(["config", "set", "request_timeout", "0.5"]) == 0
    fake_server.routes[CHAT] = lambda req: Response(events=reply_events("late"), delay=3)
    assert run(["ask", "-m", fake_server.url, QUESTION]) == 1
    err = capsys.readouterr().err
    assert "sent no answer within 0.5 s" in err and "request_timeout" in err
    assert [m[1:3] for m in history()] == [("user", QUESTION)]


def test_a_stream_cut_mid_reply_keeps_the_partial_reply_as_interrupted(fake_server, capsys):
    fake_server.routes[CHAT] = lambda req: Response(events=[chunk("Hello"), chunk(" there")], cut=True)
    assert run(["ask", "-m", fake_server.url, QUESTION]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("Hello there") and "lost mid-reply" in out.err
    assert [m[1:] for m in history()] == [("user", QUESTION, "complete"), ("assistant", "Hello there", "interrupted")]


def test_piped_input_is_kept_when_the_server_cannot_be_reached(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a long document\n")))
    url = f"http://127.0.0.1:{closed_port()}/v1"
    assert run(["ask", "-m", url, "-s", "Be brief.", "summarise"]) == 1
    err = capsys.readouterr().err
    assert "your message is saved in the history (conversation 1" in err
    with Store.open() as store:
        conv = store.get_conversation(1)
        assert (conv.model, conv.system_prompt) == (url, "Be brief.")
        assert [m.content for m in store.thread(1)] == ["summarise\n\na long document\n"]


def test_continuing_a_conversation_whose_server_is_down_keeps_the_message_in_it(fake_server, capsys):
    fake_server.reply("first answer")
    assert run(["ask", "-m", fake_server.url, "first"]) == 0
    fake_server.stop()  # the server is gone
    assert run(["ask", "-c", "second"]) == 1
    assert "connection refused" in capsys.readouterr().err
    assert [m[1:3] for m in history()] == [("user", "first"), ("assistant", "first answer"), ("user", "second")]
    fake_server.stop = lambda: None  # already stopped for the fixture's teardown


def test_no_save_stores_nothing_and_still_says_what_failed(capsys):
    assert run(["ask", "-n", "-m", f"http://127.0.0.1:{closed_port()}/v1", QUESTION]) == 1
    assert "connection refused" in capsys.readouterr().err and history() == []
