"""What a server offers (list_models) and which model a RemoteRef picks from it."""

from __future__ import annotations

import pytest

from qwenchat.remote import errors
from qwenchat.remote.client import list_models
from qwenchat.remote.engine import RemoteEngine
from qwenchat.remote.reference import RemoteRef
from tests.remote.fake_server import Response


def failure(make, kind=errors.RemoteError) -> errors.RemoteError:
    with pytest.raises(kind) as e:
        make()
    return e.value


def connect(server) -> RemoteEngine:
    return RemoteEngine.connect(RemoteRef.parse(server.url))


def test_several_models_and_none_named_lists_them(fake_server):
    fake_server.models = [{"id": "a"}, {"id": "b"}]
    e = failure(lambda: connect(fake_server))
    assert e.message == f"{fake_server.url} offers 2 models: a, b"
    assert e.hint == f"name one: -m {fake_server.url}#a"


def test_a_named_model_that_is_not_offered_lists_the_others(fake_server):
    fake_server.models = [{"id": "a"}, {"id": "b"}]
    e = failure(lambda: RemoteEngine.connect(RemoteRef.parse(fake_server.url + "#c")), errors.NotFoundError)
    assert e.message == f"{fake_server.url} does not offer model 'c'; it offers a, b"


def test_list_models_reads_the_context_window_where_the_server_says(fake_server):
    fake_server.models = [{"id": "vllm", "max_model_len": 32768, "owned_by": "vllm"},
                          {"id": "llama", "meta": {"n_ctx_train": 4096}}, {"id": "ollama"}]
    got = {m.id: (m.context_window, m.owned_by) for m in list_models(RemoteRef.parse(fake_server.url), None)}
    assert got == {"vllm": (32768, "vllm"), "llama": (4096, None), "ollama": (None, None)}


def test_llama_cpp_context_is_the_one_the_server_runs_with(fake_server):
    fake_server.models = [{"id": "llama", "meta": {"n_ctx_train": 32768}}]
    ref = RemoteRef.parse(fake_server.url)
    assert list_models(ref, None)[0].context_window == 32768  # no /props: the model's own
    fake_server.routes["GET /props"] = lambda req: Response(200, {"default_generation_settings": {"n_ctx": 4096}})
    assert list_models(ref, None)[0].context_window == 4096
    assert RemoteEngine.connect(ref).info.context_window == 4096
