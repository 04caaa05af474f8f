"""The chat app on a remote model (issue 14): Pilot drives the app, through the real start-up path
(`qwenchat -m http://…/v1`), against a real `qwenchat serve` on 127.0.0.1 around a tiny random
model. The server's backend records every request it received (messages and options) and can
be slowed per chunk and made endless (a random model may stop after a token or two), so a test
can act mid-reply.

What is checked is what the user sees (the reply, its status, the status bar, notifications) and
what is true afterwards (the history, the request the server saw)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("uvicorn", reason="the server tests need the 'serve' extra: pip install -e '.[test,serve]'")

from qwenchat.engine.records import Chunk, GenerateOptions, Reply  # noqa: E402
from qwenchat.server.app import ServerConfig, create_app  # noqa: E402
from qwenchat.server.backend import Backend  # noqa: E402
from qwenchat.tui.app import QwenchatApp  # noqa: E402
from qwenchat.tui.screens.dialogs import EditMessageScreen  # noqa: E402
from qwenchat.tui.screens.models import ModelPicker  # noqa: E402
from qwenchat.tui.screens.settings import SettingsScreen  # noqa: E402
from tests.server.conftest import start  # noqa: E402
from tests.tui.conftest import wait_for  # noqa: E402
from tests.tui.helpers import SIZE, notes, status_text, texts  # noqa: E402
from tests.tui.screen_text import screen_text  # noqa: E402

LOAD_S = 30.0  # connecting is fast; a busy 2-core machine is not
MAX_TOKENS = 12  # the server's own limit when a request names none: short replies, quick tests


class RecordingBackend(Backend):
    """The real engine; it records each chat request (messages, options, cancel event) and can
    be slowed to `delay` seconds per chunk and made `endless` (a reply that ends is followed by
    another until the request is cancelled)."""

    def __init__(self) -> None:
        super().__init__(GenerateOptions(max_new_tokens=MAX_TOKENS))
        self.requests: list[tuple[list[dict[str, str]], Any, threading.Event]] = []
        self.delay, self.endless = 0.0, False
        self.hold: threading.Event | None = None  # a reply waits after its first text until this is set
        self.window: int | None = None  # the context window /v1/models reports (None: it says none)

    @property
    def context_window(self) -> int | None:
        return self.window

    def chat(self, messages, options, cancel, continue_last=False):
        self.requests.append(([dict(m) for m in messages], options, cancel))
        first = super().chat(messages, options, cancel, continue_last)
        return self._paced(first, lambda: super(RecordingBackend, self).chat(messages, options, cancel, continue_last),
                           cancel)

    def _paced(self, events, again, cancel):
        while True:
            for event in events:
                if isinstance(event, Reply) and self.endless and event.finish_reason != "cancelled":
                    break
                yield event
                if isinstance(event, Chunk) and self.delay:
                    time.sleep(self.delay)
                while isinstance(event, Chunk) and event.text and self.hold is not None and not self.hold.wait(0.02):
                    if cancel.is_set():
                        break
            else:
                return
            if cancel.is_set():
                return
            events = again()


@pytest.fixture(scope="module")
def served(tiny_model):
    from qwenchat.engine.chat import ChatEngine

    backend = RecordingBackend()
    server = start(create_app(backend, ServerConfig(queue_size=2)))
    engine = ChatEngine.load(tiny_model, device="cpu", dtype="float32", quantize="none", max_context=1024)
    backend.attach(engine, ["tiny"])
    server.backend = backend
    yield server
    server.stop()


@pytest.fixture()
def backend(served) -> RecordingBackend:
    b = served.backend
    b.delay, b.endless, b.hold = 0.0, False, None
    b.requests.clear()
    return b


def remote_app(model: str) -> QwenchatApp:
    """The app as `qwenchat -m MODEL` starts it: the real session factory and start-up path."""
    from qwenchat.cli.chat import make_session_factory
    from qwenchat.config import load_settings

    return QwenchatApp(make_session_factory(load_settings()), model=model, theme="qwenchat-dark",
                       persist_theme=False)


async def ready(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.session is not None or pilot.app.load_error is not None, LOAD_S)
    assert pilot.app.load_error is None, pilot.app.load_error


async def send(pilot, text: str, timeout: float = 30.0) -> None:
    chat = pilot.app.chat
    chat.input.text = text
    chat.input.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not chat.generating, timeout)


def stored_replies(store, cid: int) -> list[Any]:
    return [m for m in store.thread(cid) if m.role == "assistant"]


# -- streaming, the status bar, the history ---------------------------------------------------------

async def test_reply_streams_and_status_bar_and_history_tell_the_truth(served, backend, store):
    backend.hold = threading.Event()  # the reply waits after its first chunk: the status bar while it runs
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        label = f"{served.v1}#tiny"
        assert app.session.model_label == label
        host = served.url.removeprefix("http://")
        chat = app.chat
        chat.input.text = "Hello there"
        await pilot.press("enter")
        try:
            await wait_for(pilot, lambda: chat.buffer.tokens >= 1 and "tok" in status_text(app), 20)
            live = status_text(app)
            assert "generating" in live and host in live and "ctx" not in live
        finally:
            backend.hold.set()  # never leave the server's job held (the test would hang, not fail)
        await wait_for(pilot, lambda: not chat.generating, 30)
        (user, _, _), (role, text, status) = texts(app)
        assert role == "assistant" and text and status == "complete"
        line = status_text(app)
        parts = line.split(" │ ")
        assert parts[:2] == ["tiny", host], line
        assert "TTFT" in line and " tok" in line
        # the server reports no context window: no meter; nothing that only a local engine knows
        assert "ctx" not in line and "remote" not in line and "float32" not in line and "cpu" not in line
    reply = stored_replies(store, app.session.conversation_id)[-1]
    assert reply.meta["model"] == label and reply.meta["server"] == served.v1
    assert store.get_conversation(app.session.conversation_id).model == label
    assert backend.requests[-1][0][-1] == {"role": "user", "content": "Hello there"}


# -- stop, regenerate, branches, edit ----------------------------------------------------------------

async def test_escape_stops_the_reply_closes_the_stream_and_saves_it_interrupted(served, backend, store):
    backend.delay, backend.endless = 0.05, True  # runs until stopped
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        chat = app.chat
        chat.input.text = "Talk for a long time"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.buffer.tokens >= 3, 20)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not chat.generating, 10)
        cancel = backend.requests[-1][2]
        # the server saw the client go: the HTTP stream was closed, not left to run
        deadline = time.monotonic() + 10
        while not cancel.is_set() and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert cancel.is_set()
        (_, said, status) = texts(app)[-1]
        assert said and status == "interrupted"
        stored = stored_replies(store, app.session.conversation_id)[-1]
        assert stored.status == "interrupted" and stored.content == app.session.entries[-1].content


async def test_ctrl_c_stops_a_remote_reply_too(served, backend, store):
    backend.delay, backend.endless = 0.05, True
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        chat = app.chat
        chat.input.text = "Go on and on"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.buffer.tokens >= 3, 20)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not chat.generating, 10)
        assert texts(app)[-1][2] == "interrupted"
        assert stored_replies(store, app.session.conversation_id)[-1].status == "interrupted"


async def test_regenerate_branches_and_edit_on_a_remote_model(served, backend, store):
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first question")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.generating, 30)
        await pilot.pause()
        assert "< 2/2 >" in screen_text(app)
        cid = app.session.conversation_id
        replies = stored_replies(store, cid)
        assert len(store.siblings(replies[-1].id)) == 2
        assert [r[0] for r in backend.requests[-2:]] == [[{"role": "user", "content": "first question"}]] * 2
        app.chat.input.focus()
        await pilot.press("alt+left")
        await pilot.pause()
        assert "< 1/2 >" in screen_text(app)
        await app.chat.edit_message(0)
        await wait_for(pilot, lambda: isinstance(app.screen, EditMessageScreen))
        app.screen.dismiss("second question")
        await wait_for(pilot, lambda: not app.chat.generating and len(app.session.entries) == 2
                       and app.session.entries[0].content == "second question", 30)
        await pilot.pause()
        assert backend.requests[-1][0] == [{"role": "user", "content": "second question"}]
        assert [m.content for m in store.thread(cid)][0] == "second question"
        # every reply records where it came from
        for m in store.thread(cid):
            if m.role == "assistant":
                assert m.meta["model"] == f"{served.v1}#tiny" and m.meta["server"] == served.v1


# -- the sampling settings -----------------------------------------------------------------------------

async def test_sampling_settings_reach_the_server_and_show_no_local_default(served, backend, store):
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        dialog = app.screen
        shown = screen_text(app)
        host = served.url.removeprefix("http://")
        # the whole note is shown, wrapped, not cut at the dialog's edge
        assert "Sent to the server at " + host in shown and "you are told." in shown
        from textual.widgets import Input

        fields = {f.id: f for f in dialog.query(Input)}
        # no local default presented as if it applied there: the server decides
        assert fields["temperature"].placeholder == fields["top_k"].placeholder == "the server's default"
        for name, value in dict(temperature="0.5", top_p="0.9", top_k="7", min_p="0.05",
                                repetition_penalty="1.1", max_new_tokens="5", seed="42").items():
            fields[name].value = value
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await send(pilot, "with settings")
        options = backend.requests[-1][1]
        assert (options.temperature, options.top_p, options.top_k, options.min_p, options.repetition_penalty,
                options.max_new_tokens, options.seed) == (0.5, 0.9, 7, 0.05, 1.1, 5, 42)
        assert not [n for n in notes(app) if "Not applied" in n]  # qwenchat serve takes every one
        reply = stored_replies(store, app.session.conversation_id)[-1]
        assert reply.meta["settings"]["top_k"] == 7 and reply.meta["usage"]["completion_tokens"] <= 5


# -- the model picker ---------------------------------------------------------------------------------

async def _pick(pilot, text: str) -> ModelPicker:
    await pilot.press("ctrl+o")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ModelPicker))
    picker = pilot.app.screen
    field = picker.query_one("#path")
    field.focus()
    field.value = text
    await pilot.press("enter")
    return picker


async def test_picker_lists_the_models_of_a_server_that_offers_several(served, backend, store):
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        first = app.session
        backend.model_ids = ("tiny", "tiny-too")
        try:
            picker = await _pick(pilot, served.url)  # no /v1, no model: it asks the server
            await wait_for(pilot, lambda: "offers 2 models" in screen_text(app), 20)
            shown = screen_text(app)
            assert "tiny-too" in shown
            await pilot.press("down", "enter")  # the second one
            await wait_for(pilot, lambda: app.session is not first, LOAD_S)
        finally:
            backend.model_ids = ("tiny",)
        assert not isinstance(app.screen, ModelPicker) and picker is not app.screen
        assert app.session.model_label == f"{served.v1}#tiny-too"
        assert status_text(app).startswith("tiny-too │ ")


async def test_picker_shows_a_refused_connection_and_the_model_in_use_stays(served, backend, store):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        first = app.session
        await _pick(pilot, f"http://127.0.0.1:{port}/v1")
        await wait_for(pilot, lambda: "connection refused" in screen_text(app), 20)
        assert "Traceback" not in screen_text(app) and isinstance(app.screen, ModelPicker)
        await pilot.press("escape")
        await pilot.pause()
        assert app.session is first and not isinstance(app.screen, ModelPicker)
        await send(pilot, "still here?")
        assert texts(app)[-1][2] == "complete"


async def test_a_model_the_server_does_not_offer_fails_with_its_message_and_keeps_the_model(served, backend, store):
    app = remote_app(served.v1)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        first = app.session
        await _pick(pilot, f"{served.v1}#no-such-model")
        await wait_for(pilot, lambda: app.load_error is not None, LOAD_S)
        await pilot.pause()
        assert any("does not offer model 'no-such-model'" in n and "Fix:" in n for n in notes(app))
        assert app.session is first and app.model == first.model_label
        assert status_text(app).startswith("tiny │ ")
        await send(pilot, "the old model answers")
        assert texts(app)[-1][2] == "complete"


# -- failures, against the scripted fake server (tests/remote/fake_server.py) --------------------------

@pytest.fixture()
def fake():
    from tests.remote.fake_server import FakeServer

    server = FakeServer(models=[{"id": "big", "object": "model", "owned_by": "test", "max_model_len": 32768}])
    yield server
    server.stop()


async def test_server_going_down_mid_reply_keeps_the_partial_reply_as_interrupted(fake, store):
    from tests.remote.fake_server import Response, chunk

    fake.routes["POST /v1/chat/completions"] = lambda req: Response(
        events=[chunk("Hello"), chunk(" there")], cut=True, delay=0.05)
    app = remote_app(fake.url)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "are you there?")
        await pilot.pause()
        assert texts(app)[-2:] == [("user", "are you there?", "complete"), ("assistant", "Hello there", "interrupted")]
        assert any("lost mid-reply" in n for n in notes(app)) and not any("Traceback" in n for n in notes(app))
        thread = store.thread(app.session.conversation_id)
        assert [(m.role, m.content, m.status) for m in thread] == [
            ("user", "are you there?", "complete"), ("assistant", "Hello there", "interrupted")]
        assert thread[-1].meta["server"] == fake.url and thread[-1].meta["model"] == f"{fake.url}#big"


async def test_failure_before_the_first_token_keeps_the_users_message(fake, store):
    from tests.remote.fake_server import error

    fake.routes["POST /v1/chat/completions"] = lambda req: error(500, "out of GPU memory")
    app = remote_app(fake.url)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "keep me")
        await pilot.pause()
        assert ("user", "keep me", "complete") in texts(app)
        assert any("out of GPU memory" in n for n in notes(app))
        assert [(m.role, m.content) for m in store.thread(app.session.conversation_id)] == [("user", "keep me")]


async def test_401_at_start_says_so_and_the_app_keeps_running(fake, store):
    from tests.remote.fake_server import error

    fake.routes["GET /v1/models"] = lambda req: error(401, "missing key", code="invalid_api_key")
    app = remote_app(fake.url)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.load_error is not None, LOAD_S)
        await pilot.pause()
        shown = notes(app)
        assert any("needs an API key and none was given" in n and "QWENCHAT_API_KEY" in n for n in shown), shown
        assert app.session is None and "no model loaded" in status_text(app)
        chat = app.chat
        chat.input.text = "hello?"
        await pilot.press("enter")
        await pilot.pause()
        assert chat.input.text == "hello?"  # nothing typed is lost


async def test_a_refused_setting_is_shown_once_and_the_window_the_server_reported_is_metered(fake, store):
    from tests.remote.fake_server import Response, error, reply_events

    def route(req):
        if "top_k" in req.body:
            return error(400, "top_k is not supported by this server", param="top_k")
        return Response(events=reply_events("Fine", " thanks", usage={"prompt_tokens": 20, "completion_tokens": 2,
                                                                     "total_tokens": 22}))

    fake.routes["POST /v1/chat/completions"] = route
    app = remote_app(fake.url)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        line = status_text(app)
        assert line.startswith("big │ 127.0.0.1:") and "ctx ~0/32768" in line
        from dataclasses import replace

        app.session.set_options(replace(app.session.options, top_k=5))
        await send(pilot, "hi")
        await pilot.pause()
        refused = [n for n in notes(app) if "Not applied" in n]
        assert len(refused) == 1 and "top_k" in refused[0]
        assert "ctx 22/32768" in status_text(app)  # the server's own counts: no "~"
        await send(pilot, "again")
        await pilot.pause()
        assert len([n for n in notes(app) if "Not applied" in n]) == 1  # said once
        assert texts(app)[-1] == ("assistant", "Fine thanks", "complete")


async def test_picker_asks_a_server_with_the_api_key_flag(fake, store):
    from qwenchat.cli.chat import make_session_factory
    from qwenchat.config import load_settings
    from tests.remote.fake_server import FakeServer, Response, error

    key = "sk-picker-0123456789"
    second = FakeServer(models=[{"id": "a", "object": "model"}, {"id": "b", "object": "model"}])
    try:
        second.routes["GET /v1/models"] = lambda req: (
            Response(200, {"object": "list", "data": second.models})
            if req.headers.get("authorization") == f"Bearer {key}" else error(401, "missing key"))
        app = QwenchatApp(make_session_factory(load_settings()), model=fake.url, theme="qwenchat-dark",
                          persist_theme=False, api_key=key)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await _pick(pilot, second.url)
            await wait_for(pilot, lambda: "offers 2 models" in screen_text(app), 20)
            assert key not in screen_text(app)
    finally:
        second.stop()


def test_the_app_command_hands_the_api_key_flag_to_the_app(monkeypatch):
    import qwenchat.tui
    from qwenchat.cli.chat import open_tui

    got: dict[str, Any] = {}
    monkeypatch.setattr(qwenchat.tui, "run_app", lambda factory, **kw: got.update(kw))
    open_tui("http://127.0.0.1:9/v1", False, None, None, None, api_key="sk-flag-0123456789")
    assert got["api_key"] == "sk-flag-0123456789"


async def test_after_a_failed_reply_the_status_bar_drops_the_previous_replys_numbers(fake, store):
    from tests.remote.fake_server import Response, chunk

    fake.reply("One", " two", usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
    app = remote_app(fake.url)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        assert "2 tok" in status_text(app) and "TTFT" in status_text(app)
        fake.routes["POST /v1/chat/completions"] = lambda req: Response(events=[chunk("Cut")], cut=True)
        await send(pilot, "second")
        await pilot.pause()
        line = status_text(app)
        assert texts(app)[-1] == ("assistant", "Cut", "interrupted")
        assert "2 tok" not in line and "TTFT" not in line, line


async def test_while_connecting_the_app_says_so_and_names_the_server(fake, store):
    from tests.remote.fake_server import Response

    fake.routes["GET /v1/models"] = lambda req: Response(200, {"object": "list", "data": fake.models}, delay=1.5)
    app = remote_app(fake.url)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "Connecting to" in screen_text(app), 10)
        assert f"Connecting to {fake.url}…" in screen_text(app)
        assert status_text(app) == f"{fake.url.removeprefix('http://').removesuffix('/v1')} │ loading…"
        await ready(pilot)
        assert status_text(app).startswith("big │ ")


async def test_picker_shows_the_answer_of_the_server_asked_last(fake, store):
    from tests.remote.fake_server import FakeServer, Response

    slow = FakeServer(models=[{"id": "slow-1", "object": "model"}, {"id": "slow-2", "object": "model"}])
    fast = FakeServer(models=[{"id": "fast-1", "object": "model"}, {"id": "fast-2", "object": "model"}])
    slow.routes["GET /v1/models"] = lambda req: Response(200, {"object": "list", "data": slow.models}, delay=1.5)
    try:
        app = remote_app(fake.url)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            picker = await _pick(pilot, slow.url)
            await wait_for(pilot, lambda: "Asking" in screen_text(app))
            field = picker.query_one("#path")
            field.focus()
            field.value = fast.url
            await pilot.press("enter")
            await wait_for(pilot, lambda: "fast-2" in screen_text(app), 10)
            await wait_for(pilot, lambda: len(slow.requests) == 1, 10)
            await pilot.pause(2.0)  # the slow server has answered by now: its models must not replace these
            assert "fast-2" in screen_text(app) and "slow-2" not in screen_text(app)
    finally:
        slow.stop()
        fast.stop()
