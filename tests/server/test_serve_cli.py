"""`qwenchat serve` as a command: real processes on 127.0.0.1 (port 0: the system picks a free
one and the printed URL names it) around a tiny model. The bind refusal, a port in use and a
missing extra are checked in-process: they fail before any model loads."""

from __future__ import annotations

import re
import signal
import socket
import sys
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")

from qwenchat.cli import run  # noqa: E402
from tests.server.serve_process import ServeProcess  # noqa: E402

KEY = "sekret-key"


@pytest.fixture(scope="module")
def servers(tiny_model, endless_model, tmp_path_factory):
    """Two servers started side by side (their start-ups overlap): `keyed` with an API key and
    --save, serving the tiny model whose greedy replies never end (a reply is surely still
    streaming when a test stops the server), `plain` with neither, serving the tiny model."""
    common = ["--port", "0", "--device", "cpu", "--quantize", "none"]
    keyed = ServeProcess(["-m", str(endless_model), *common, "--api-key", KEY, "--save"], tmp_path_factory.mktemp("home-keyed"))
    plain = ServeProcess(["-m", str(tiny_model), *common], tmp_path_factory.mktemp("home-plain"))
    try:
        for s in (keyed, plain):
            s.start()
        yield {"keyed": keyed, "plain": plain}
    finally:
        keyed.kill()
        plain.kill()


# -- before any model loads ----------------------------------------------------------------------------


def test_other_address_without_a_key_is_refused(capsys):
    assert run(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without an API key" in err and "--api-key" in err and "--unprotected" in err


def test_a_server_url_as_the_model_is_refused_before_listening(capsys):
    """It was looked up as a Hub repo id after the server had started listening."""
    assert run(["serve", "-m", "http://gpu-box:8000/v1", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "is a server: qwenchat serve runs a local model" in err and "listening" not in err


def test_port_in_use_is_one_clear_error(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert run(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, seconds", [([], 0.1), (["--stream-interval", "0"], 0.0), (["--stream-interval", "0.25"], 0.25)])
def test_stream_interval_reaches_the_server(monkeypatch, flag, seconds):
    from qwenchat.server import run as server_run

    seen = {}

    def serve(settings, opts, progress=None):
        seen["opts"] = opts
        return 0

    monkeypatch.setattr(server_run, "serve", serve)
    assert run(["serve", "-m", "some-model", *flag]) == 0
    assert seen["opts"].config.stream_interval_s == seconds


def test_a_negative_stream_interval_is_refused(capsys):
    assert run(["serve", "--stream-interval", "-1"]) == 2
    assert "--stream-interval" in capsys.readouterr().err


def test_missing_extra_is_named(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    assert run(["serve"]) == 1
    err = capsys.readouterr().err
    assert "'serve' extra" in err and "uvicorn" in err and "pip install 'qwenchat[serve]'" in err


def test_a_model_that_cannot_load_stops_the_server_with_its_error(capsys, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()  # a model folder by its config.json, but no weights: found, then it fails to load
    (broken / "config.json").write_text("{}")
    code = run(["serve", "-m", str(broken), "--port", "0"])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert "listening on http://127.0.0.1:" in err and "broken-model" in err and "Traceback" not in err


def test_a_name_that_means_no_model_is_refused_before_listening(capsys, tmp_path):
    """It said "listening on ..." first (found hands-on)."""
    code = run(["serve", "-m", "nosuchmodel", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown model 'nosuchmodel'" in err and "listening" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code = run(["serve", "-m", str(empty), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "has no config.json" in err and "listening" not in err


# -- a running server ------------------------------------------------------------------------------


def test_binds_loopback_and_prints_the_base_url(servers):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", servers["keyed"].url)


def test_a_local_folder_is_listed_by_its_name_and_answers_to_its_path(servers, tiny_model):
    client = openai.OpenAI(base_url=servers["plain"].url, api_key="any", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [tiny_model.name]
    assert f"ready, model {tiny_model.name} on cpu" in servers["plain"].stderr
    r = client.chat.completions.create(model=str(tiny_model), messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.model == str(tiny_model)
    assert client.models.retrieve(str(tiny_model)).id == str(tiny_model)  # an id with slashes


def test_api_key_is_required_when_set(servers):
    url = servers["keyed"].url
    assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # for monitors
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.get(url + "/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(url + "/chat/completions", json={"messages": []})  # the key is checked first
    assert r.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    assert openai.OpenAI(base_url=url, api_key=KEY, max_retries=0).models.list().data


def test_save_stores_the_conversation_marked_as_from_the_api(servers, monkeypatch):
    s = servers["keyed"]
    client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0, timeout=60)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "First question"}]
    model = client.models.list().data[0].id
    first = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Second question"}]
    streamed = client.chat.completions.create(model=model, messages=messages,
                                              max_tokens=4, temperature=0, stream=True)
    second = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)

    monkeypatch.setenv("QWENCHAT_HOME", str(s.home))
    from qwenchat.store import Store

    with Store.open() as store:
        convs = store.list_conversations()
        assert len(convs) == 1  # the second turn continued the first conversation
        conv = convs[0]
        assert conv.settings["source"] == "api" and conv.system_prompt == "Be brief."
        thread = [(m.role, m.content) for m in store.thread(conv.id)]
    assert thread == [("user", "First question"), ("assistant", first.choices[0].message.content),
                      ("user", "Second question"), ("assistant", second)]


def test_plain_server_saves_nothing_and_logs_each_request(servers):
    s = servers["plain"]
    before = len(s.lines)
    client = openai.OpenAI(base_url=s.url, api_key="any", max_retries=0, timeout=60)
    client.chat.completions.create(model=client.models.list().data[0].id,
                                   messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    deadline = time.monotonic() + 5  # a line is written once its response has gone out
    while sum(line.startswith("127.0.0.1 ") for line in s.lines[before:]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    log = [line for line in s.lines[before:] if line.startswith("127.0.0.1 ")]
    assert len(log) == 2 and '"GET /v1/models" 200' in log[0]
    assert re.search(r'"POST /v1/chat/completions" 200 prompt \d+ \(cached \d+\) completion \d+ [\d.]+ tok/s', log[1])
    assert not list(s.home.rglob("history.db"))  # requests are not stored without --save


def test_sigterm_mid_stream_stops_cleanly_with_exit_0(servers):
    s = servers["keyed"]
    # greedy, this model never stops before max_tokens: still generating when the signal comes
    body = {"messages": [{"role": "user", "content": "Tell me a long story"}], "max_tokens": 2000,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", s.url + "/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = r.iter_lines()
        next(line for line in lines if '"content"' in line)
        t0 = time.monotonic()
        code = s.stop(signal.SIGTERM)
        rest = list(lines)  # what the server sent before it closed the connection
    assert code == 0, s.stderr
    assert time.monotonic() - t0 < 15
    assert "Traceback" not in s.stderr and "qwenchat serve: stopped" in s.stderr, s.stderr
    # the reply in flight was cut, not run to its end, and the stream ended itself with the
    # stopping event (a loaded machine's stream used to be cut first: the client saw the
    # connection drop, and uvicorn logged "ASGI callable returned without completing response")
    assert any("the server is stopping" in line for line in rest), rest
    assert "ERROR" not in s.stderr, s.stderr
    streamed = [line for line in s.lines if '"POST /v1/chat/completions"' in line][-1]
    assert " cancelled " in streamed, s.stderr


def test_ctrl_c_stops_cleanly_with_exit_0(servers):
    s = servers["plain"]
    assert s.stop(signal.SIGINT) == 0, s.stderr
    assert "Traceback" not in s.stderr and "qwenchat serve: stopped" in s.stderr, s.stderr
