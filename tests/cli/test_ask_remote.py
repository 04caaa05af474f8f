"""`qwenchat ask -m URL` in process against a real `qwenchat serve` (the tiny model, offered as
"tiny", on 127.0.0.1): the reply, `-c`, `--json` with the server's usage, `-u`, the history's
record of server and model, `--schema`, and the key never printed nor stored. Signals and exit
statuses of real processes are in test_ask_remote_process.py; failures in test_ask_remote_failures.py."""

from __future__ import annotations

import json

import pytest

from qwenchat.cli import run
from qwenchat.paths import database_file
from qwenchat.store import Store
from tests.remote.conftest import ask_without_input, fake_server, serve  # noqa: F401  (fixtures)

KEY = "sk-remote-faces-0123456789"


pytestmark = pytest.mark.usefixtures("ask_without_input")


def ask(*args: str) -> int:
    return run(["ask", *args])


def history() -> list[tuple]:
    with Store.open() as store:
        return [(c.model, m.role, m.content, m.status, m.meta) for c in store.list_conversations()
                for m in store.thread(c.id)]


def test_ask_a_server_then_continue_and_every_reply_records_server_and_model(serve, capsys):
    assert ask("-m", serve.v1, "Hello there", "--max-tokens", "5", "--seed", "1") == 0
    first = capsys.readouterr().out
    assert ask("-c", "And then?", "--max-tokens", "5", "--seed", "1") == 0  # reconnects: the label names it
    second = capsys.readouterr().out
    rows = history()
    label = f"{serve.v1}#tiny"
    assert [r[1] for r in rows] == ["user", "assistant"] * 2 and {r[0] for r in rows} == {label}
    assert rows[1][2] == first.removesuffix("\n") and rows[3][2] == second.removesuffix("\n")
    for reply in (rows[1], rows[3]):
        assert reply[3] == "complete"
        assert (reply[4]["server"], reply[4]["model"], reply[4]["device"]) == (serve.v1, label, "remote")
        assert "dtype" not in reply[4]


def test_json_carries_the_servers_usage_with_cached_tokens(serve, capsys):
    assert ask("-m", serve.v1, "Hello there", "--max-tokens", "3", "--json") == 0
    one = json.loads(capsys.readouterr().out)
    assert ask("-c", "Go on", "--max-tokens", "3", "--json") == 0
    two = json.loads(capsys.readouterr().out)
    assert (two["server"], two["model_id"], two["device"]) == (serve.v1, "tiny", "remote")
    assert set(two["usage"]) == {"prompt_tokens", "cached_tokens", "completion_tokens"}  # no local-only counts
    assert "dtype" not in two and "prefill_tok_s" not in two["timings"]
    assert two["usage"]["prompt_tokens"] > one["usage"]["prompt_tokens"]
    assert two["usage"]["cached_tokens"] > 0  # the server reused the first turn's cache and said so
    assert two["conversation_id"] == one["conversation_id"]


def test_usage_line_shows_what_is_true_for_a_server(serve, capsys):
    assert ask("-m", serve.v1, "Hi", "--max-tokens", "4", "-u") == 0
    err = capsys.readouterr().err
    assert f"server: {serve.v1}, model tiny (context window" in err
    assert "tokens: prompt " in err and "first token " in err and "tok/s" in err
    for local_only in ("float32", "prefill", "prefilled", " on cpu"):
        assert local_only not in err


def test_a_model_the_server_does_not_offer_is_named_with_those_it_does(serve, capsys):
    assert ask("-m", f"{serve.v1}#Qwen/Qwen2-72B-Instruct", "Hi") == 1
    err = capsys.readouterr().err
    assert "does not offer model 'Qwen/Qwen2-72B-Instruct'" in err and "tiny" in err and "Traceback" not in err


def test_the_key_is_sent_but_never_printed_nor_stored(fake_server, capsys):
    fake_server.reply("Hi", " there", usage={"prompt_tokens": 5, "completion_tokens": 2})
    assert ask("-m", fake_server.url, "--api-key", KEY, "Hello", "-u", "--json") == 0
    out = capsys.readouterr()
    posts = [r for r in fake_server.requests if r.path.endswith("/completions")]
    assert posts[-1].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in out.out + out.err
    assert KEY.encode() not in database_file().read_bytes()
    assert history()[1][2] == "Hi there"


def test_the_key_from_the_config_and_the_environment_in_their_order(fake_server, monkeypatch, capsys):
    fake_server.reply("ok")
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-env")
    assert ask("-m", fake_server.url, "Hello") == 0
    monkeypatch.setenv("QWENCHAT_API_KEY", "from-qwenchat-env")
    assert ask("-m", fake_server.url, "Hello") == 0
    assert run(["config", "set", "api_key", "from-the-config-file"]) == 0
    assert ask("-m", fake_server.url, "Hello") == 0
    assert ask("-m", fake_server.url, "--api-key", "from-the-flag", "Hello") == 0
    sent = [r.headers["authorization"] for r in fake_server.requests if r.path.endswith("/completions")]
    assert sent == ["Bearer from-openai-env", "Bearer from-qwenchat-env", "Bearer from-the-config-file",
                    "Bearer from-the-flag"]


def test_a_refused_setting_is_said_once_on_stderr(fake_server, capsys):
    from tests.remote.fake_server import Response, error, reply_events

    def chat(req):
        if "min_p" in req.body:
            return error(400, "min_p is not supported by this server", param="min_p")
        return Response(events=reply_events("fine"))

    fake_server.routes["POST /v1/chat/completions"] = chat
    assert ask("-m", fake_server.url, "--min-p", "0.1", "Hello") == 0
    out = capsys.readouterr()
    assert out.out == "fine\n"
    assert out.err.count("warning:") == 1 and "refused the setting 'min_p'" in out.err


def test_schema_becomes_response_format(fake_server, capsys):
    from tests.remote.fake_server import Response, reply_events

    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(events=reply_events('{"name": "Ada"}'))
    assert ask("-m", fake_server.url, "--schema", "name", "Who wrote the first program?") == 0
    assert json.loads(capsys.readouterr().out) == {"name": "Ada"}
    body = [r for r in fake_server.requests if r.path.endswith("/completions")][-1].body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["name"]


def test_local_engine_flags_are_said_not_to_apply(fake_server, capsys):
    fake_server.reply("ok")
    assert ask("-m", fake_server.url, "--device", "cpu", "--quantize", "int8", "Hello") == 0
    assert "--device, --quantize apply to a local model only; the server decides those" in capsys.readouterr().err
    fake_server.reply("ok")
    assert ask("-m", fake_server.url, "--context-limit", "100", "Hello") == 0
    assert "--context-limit applies to a local model only; the server decides that" in capsys.readouterr().err


def test_raw_continuation_goes_through_the_servers_completions(serve, capsys):
    assert ask("-m", serve.v1, "--raw", "Once upon a time", "--max-tokens", "4", "--json") == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["usage"]["completion_tokens"] >= 1 and obj["server"] == serve.v1
    (_, _, prompt, _, _), (_, _, text, status, meta) = history()
    assert (prompt, text, status, meta["server"]) == ("Once upon a time", obj["text"], "complete", serve.v1)
