"""Structured output on a tiny model with random weights, which never writes JSON by itself:
under a constraint every reply parses and matches, whatever the seed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.schema_grammar import JSON_OBJECT, check_spec
from qwenchat.engine.errors import SettingsError
from qwenchat.engine.records import GenerateOptions, Reply

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "score": {"type": "number"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 5}, "zip": {"type": "integer"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "role", "tags", "address"],
    "additionalProperties": False,
}
# The same, compact: a random model fills every whitespace gap it may, which only costs time here
COMPACT = {**SCHEMA, "x-guidance": {"whitespace_pattern": " ?"}}
MESSAGES = [{"role": "user", "content": "Describe a person."}]


@pytest.fixture(scope="module")  # the cheapest tiny model: hundreds of tokens a reply
def engine(tiny_models: dict[str, Path]) -> ChatEngine:
    return ChatEngine.load(tiny_models["untied"], device="cpu", dtype="float32", quantize="none")


def _reply(engine: ChatEngine, options: GenerateOptions, messages=MESSAGES) -> Reply:
    *_, reply = engine.chat(messages, options)
    assert isinstance(reply, Reply)
    return reply


def test_unconstrained_tiny_model_does_not_write_json(engine: ChatEngine) -> None:
    # the premise of the tests below: the constraint, not luck, makes the JSON
    texts = [_reply(engine, GenerateOptions(seed=s, max_new_tokens=40)).text for s in range(5)]
    assert not any(_parses(t) for t in texts)


@pytest.mark.parametrize("seed", range(10))
def test_schema_output_always_validates(engine: ChatEngine, seed: int) -> None:
    reply = _reply(engine, GenerateOptions(seed=seed, temperature=1.0, max_new_tokens=1000, constraint=COMPACT))
    assert reply.finish_reason == "stop", reply.text
    jsonschema.validate(json.loads(reply.text), SCHEMA)


def test_schema_output_with_free_whitespace_validates(engine: ChatEngine) -> None:
    reply = _reply(engine, GenerateOptions(seed=5, temperature=1.0, max_new_tokens=1000, constraint=SCHEMA))
    assert reply.finish_reason == "stop", reply.text
    assert "\n" in reply.text or "  " in reply.text  # the default allows pretty-printing
    jsonschema.validate(json.loads(reply.text), SCHEMA)


@pytest.mark.parametrize("seed", range(4))
def test_json_object_output_is_an_object(engine: ChatEngine, seed: int) -> None:
    reply = _reply(engine, GenerateOptions(seed=seed, temperature=0.8, max_new_tokens=1000, constraint=JSON_OBJECT))
    if reply.finish_reason == "length":  # free-form JSON may outgrow the budget: then it is cut, never "stop"
        assert not _parses(reply.text)
        return
    assert isinstance(json.loads(reply.text), dict)


def test_max_tokens_cut_is_length_and_incomplete(engine: ChatEngine) -> None:
    reply = _reply(engine, GenerateOptions(seed=1, max_new_tokens=3, constraint=SCHEMA))
    assert reply.finish_reason == "length"
    assert reply.text.startswith("{") and not _parses(reply.text)


def test_kv_cache_is_reused_after_a_constrained_reply(engine: ChatEngine) -> None:
    first = _reply(engine, GenerateOptions(seed=2, max_new_tokens=1000, constraint=COMPACT))
    follow_up = MESSAGES + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Again."}]
    second = _reply(engine, GenerateOptions(seed=3, max_new_tokens=1000, constraint=COMPACT), follow_up)
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
    jsonschema.validate(json.loads(second.text), SCHEMA)


@pytest.mark.parametrize(("schema", "named"), [
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
    ({"type": "object", "propertyNames": {"pattern": "a"}}, "propertyNames"),
    ({"type": "string", "format": "colour"}, "colour"),
])
def test_unsupported_keyword_is_named_before_generation(engine: ChatEngine, schema: dict, named: str) -> None:
    before = list(engine.cache.tokens)
    with pytest.raises(SettingsError, match="cannot enforce") as err:
        engine.chat(MESSAGES, GenerateOptions(constraint=schema))
    assert named in str(err.value) and "Traceback" not in str(err.value)
    assert engine.cache.tokens == before  # nothing was generated


@pytest.mark.parametrize("schema", [
    {"type": "strin"},
    {"type": "string", "minLength": "x"},
    {"$ref": "#/definitions/missing"},
    {"enum": []},
])
def test_invalid_schema_is_a_clear_error(schema: dict) -> None:
    with pytest.raises(SettingsError, match="invalid JSON schema"):
        check_spec(schema)


@pytest.mark.parametrize("spec", [["type"], 3, "yaml_object", True])
def test_constraint_of_the_wrong_kind(spec: object) -> None:
    with pytest.raises(SettingsError, match="must be a JSON schema"):
        check_spec(spec)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_a_cut_reply_continues_under_its_grammar(engine: ChatEngine) -> None:
    options = GenerateOptions(seed=4, max_new_tokens=6, constraint=COMPACT)
    cut = _reply(engine, options)
    assert cut.finish_reason == "length"
    history = MESSAGES + [{"role": "assistant", "content": cut.text}]
    *_, rest = engine.chat(history, replace(options, max_new_tokens=1000), continue_last=True)
    assert rest.finish_reason == "stop"
    jsonschema.validate(json.loads(cut.text + rest.text), SCHEMA)
