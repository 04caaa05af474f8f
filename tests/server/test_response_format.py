"""`response_format` of the chat completions API (issue 17): json_object and json_schema as
OpenAI defines them, on a real server around a random tiny model (which never writes JSON by
itself)."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")

import jsonschema  # noqa: E402

from qwenchat.server.app import ServerConfig, create_app  # noqa: E402
from qwenchat.server.backend import Backend  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"enum": ["red", "green"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9},
                   "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2}},
    "required": ["colour", "n", "tags"],
    "additionalProperties": False,
    "x-guidance": {"whitespace_pattern": " ?"},  # a random model fills every gap it may: keep it short
}
HI = [{"role": "user", "content": "Describe a ball."}]


@pytest.fixture(scope="module")
def client(live, tiny_models):
    from qwenchat.engine.chat import ChatEngine

    backend = Backend()
    s = live(create_app(backend, ServerConfig()))
    model = tiny_models["untied"]
    backend.attach(ChatEngine.load(model, device="cpu", dtype="float32", quantize="none", max_context=1024),
                   ["tiny"])
    return openai.OpenAI(base_url=s.v1, api_key="unused", max_retries=0, timeout=60)


def _ask(client, response_format, seed=1, max_tokens=400):
    return client.chat.completions.create(model="tiny", messages=HI, max_tokens=max_tokens, seed=seed,
                                          response_format=response_format)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_reply_validates(client, seed):
    fmt = {"type": "json_schema", "json_schema": {"name": "ball", "schema": SCHEMA, "strict": True}}
    choice = _ask(client, fmt, seed).choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)


def test_json_object_reply_is_an_object_or_cut(client):
    for seed in (1, 2, 3):  # 4 tokens: a sampled reply either closed its object or was cut in it
        choice = _ask(client, {"type": "json_object"}, seed, max_tokens=4).choices[0]
        assert choice.message.content.startswith("{")
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        else:
            assert choice.finish_reason == "length"


@pytest.mark.parametrize(("fmt", "needle"), [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}, "not"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}, "invalid JSON schema"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "json_schema.schema"),
    ({"type": "yaml"}, "'yaml' is not supported"),
])
def test_bad_response_format_is_a_400(client, fmt, needle):
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, fmt)
    assert needle in str(err.value)
    assert err.value.body["param"].startswith("response_format")  # an invalid schema named "messages"
