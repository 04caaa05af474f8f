"""`qwenchat models --server URL` (and a server URL configured as the model): what a server
offers, with context windows when it says, and its failures as one-line errors."""

from __future__ import annotations

import socket

import pytest

from qwenchat.cli import run
from tests.remote.conftest import fake_server, serve  # noqa: F401  (fixtures)
from tests.remote.fake_server import error

OFFERED = [
    {"id": "Qwen/Qwen2-72B-Instruct", "object": "model", "owned_by": "vllm", "max_model_len": 32768},
    {"id": "qwen2.5:0.5b", "object": "model", "owned_by": "library"},
    {"id": "local.gguf", "object": "model", "meta": {"n_ctx_train": 4096}},
]


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch):
    for var in ("QWENCHAT_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def test_server_models_with_their_context_and_how_to_use_them(fake_server, capsys):
    fake_server.models = OFFERED
    assert run(["models", "--server", fake_server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "ID\tCONTEXT\tOWNED BY\tUSE WITH -m",
        f"Qwen/Qwen2-72B-Instruct\t32768\tvllm\t{fake_server.url}#Qwen/Qwen2-72B-Instruct",
        f"qwen2.5:0.5b\t-\tlibrary\t{fake_server.url}#qwen2.5:0.5b",
        f"local.gguf\t4096\t-\t{fake_server.url}#local.gguf",
    ]


def test_a_configured_server_is_listed_after_the_local_models(fake_server, capsys):
    assert run(["config", "set", "model", fake_server.url]) == 0
    capsys.readouterr()
    assert run(["models"]) == 0
    out = capsys.readouterr().out
    local, remote = out.split("\n\n")
    assert local.startswith("NAME\tREPO\t") and remote.splitlines()[1].startswith("m\t-\ttest\t")


def test_the_local_list_alone_without_a_server(fake_server, capsys):
    assert run(["models"]) == 0
    assert "ID\tCONTEXT" not in capsys.readouterr().out and fake_server.requests == []


def test_a_real_qwenchat_serve(serve, capsys):
    assert run(["models", "--server", serve.url]) == 0  # no /v1: the API's usual path is taken
    assert capsys.readouterr().out.splitlines()[1].startswith("tiny\t")


def test_the_key_is_sent_and_not_printed(fake_server, capsys):
    assert run(["models", "--server", fake_server.url, "--api-key", "sk-models-key-123456"]) == 0
    assert fake_server.requests[-1].headers["authorization"] == "Bearer sk-models-key-123456"
    out = capsys.readouterr()
    assert "sk-models-key" not in out.out + out.err


def test_a_refused_key_is_a_one_line_error(fake_server, capsys):
    fake_server.routes["GET /v1/models"] = lambda req: error(401, "invalid api key")
    assert run(["models", "--server", fake_server.url, "--api-key", "wrong-key-0000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "401" in err and "hint:" in err and "Traceback" not in err
    assert "wrong-key-0000" not in err


def test_nothing_listening_is_a_one_line_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once closed
    assert run(["models", "--server", f"http://127.0.0.1:{port}/v1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"127.0.0.1:{port}" in err and "Traceback" not in err


def test_not_a_url_is_a_usage_error(capsys):
    assert run(["models", "--server", "gpu-box:8000"]) == 2
    assert "not a server URL" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["pull"], ["rm", "--yes"]])
def test_pull_and_rm_say_a_servers_model_stays_on_the_server(command, capsys):
    assert run([*command, "http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct"]) == 2
    err = capsys.readouterr().err
    assert "http://gpu-box:8000/v1 is a server" in err and "qwenchat models --server http://gpu-box:8000/v1" in err
