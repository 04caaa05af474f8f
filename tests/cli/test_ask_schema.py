"""`qwenchat ask --schema / --json-object` as real processes on a random tiny model (which never
writes JSON by itself), and the SCHEMA argument's forms."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from qwenchat.structured import JSON_OBJECT, constraint_from_flags, parse_schema
from qwenchat.errors import UsageError
from tests.cli.test_ask import qwenchat, stored

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "size": {"enum": ["S", "M", "L"]},
        "dims": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "maxItems": 2},
    },
    "required": ["name", "size", "dims"],
    "additionalProperties": False,
    "x-guidance": {"whitespace_pattern": " ?"},  # a random model fills every gap it may: keep it short
}


@pytest.fixture(scope="module")
def model(tiny_models: dict[str, Path]) -> str:
    return str(tiny_models["untied"])


def test_schema_reply_is_the_json_alone_and_validates(model, isolated_home, tmp_path):
    path = tmp_path / "shirt.json"
    path.write_text(json.dumps(SCHEMA))
    r = qwenchat(["ask", "-m", model, "--schema", str(path), "--seed", "4", "--max-tokens", "500", "a shirt"], isolated_home)
    assert r.returncode == 0, r.stderr
    jsonschema.validate(json.loads(r.stdout), SCHEMA)  # stdout holds nothing else
    user = stored(isolated_home)[0]
    assert user[1] == "a shirt"  # as written: the schema is told the model, not stored (test_session_store)


def test_json_envelope_carries_the_parsed_reply(model, isolated_home):
    r = qwenchat(["ask", "-m", model, "--schema", json.dumps(SCHEMA), "--json", "--seed", "2", "--max-tokens", "500",
                  "a shirt"], isolated_home)
    assert r.returncode == 0, r.stderr
    envelope = json.loads(r.stdout)
    assert envelope["finish_reason"] == "stop" and envelope["parsed"] == json.loads(envelope["text"])
    jsonschema.validate(envelope["parsed"], SCHEMA)


def test_a_cut_reply_is_incomplete_json_exit_1_and_saved(model, isolated_home):
    r = qwenchat(["ask", "-m", model, "--json-object", "--seed", "1", "--max-tokens", "3", "hi"], isolated_home)
    assert r.returncode == 1
    assert "incomplete JSON" in r.stderr.decode() and "--max-tokens" in r.stderr.decode()
    assert r.stdout == b""  # never printed as if it were valid
    reply = stored(isolated_home)[1]
    assert reply[0] == "assistant" and reply[1].startswith("{")


def test_unsupported_schema_is_named_before_generation(model, isolated_home):
    bad = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    r = qwenchat(["ask", "-m", model, "--schema", json.dumps(bad), "hi"], isolated_home)
    err = r.stderr.decode()
    assert r.returncode == 2 and "--schema: the JSON schema uses something structured output cannot enforce" in err
    assert '"not"' in err and "Traceback" not in err
    assert stored(isolated_home) == []


@pytest.mark.parametrize("word", ["json", "JSON", "json_object"])
def test_schema_json_means_any_json_object_as_in_the_app(word):
    """`--schema json` made a schema with one field named "json"; the app's field took it as any
    JSON object. Both mean the same now."""
    assert constraint_from_flags(word, False) == JSON_OBJECT


@pytest.mark.parametrize(("args", "needle"), [
    (["--schema", "{not json"], "not valid JSON"),
    (["--schema", "[1, 2]"], "not an object"),
    (["--schema", "missing/schema.json"], "not found"),
    (["--schema", "x", "--json-object"], "both given"),
    # found by the grammar's check, before any model is looked for (exit 1 after the load before)
    (["--schema", '{"type": "strin"}'], "--schema: invalid JSON schema"),
    (["--schema", '{"properties": {"a": {"if": {}}}}'], "cannot enforce"),
    # "off" made a one-field schema {"off": ...} (found hands-on): it points to --no-schema
    (["--schema", "off"], "--no-schema"),
])
def test_bad_schema_argument_is_a_usage_error(isolated_home, args, needle):
    """Every kind of bad schema is exit status 2, and said before the model is even looked for
    (-m names no model here)."""
    r = qwenchat(["ask", "-m", "nowhere", *args, "hi"], isolated_home)
    assert r.returncode == 2 and needle in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_concise_form() -> None:
    assert parse_schema("name, age int, bio: a short bio, ok bool") == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                       "bio": {"type": "string", "description": "a short bio"}, "ok": {"type": "boolean"}},
        "required": ["name", "age", "bio", "ok"],
    }
    assert parse_schema("title\nscore float: from 0 to 1, say")["properties"]["score"] == {
        "type": "number", "description": "from 0 to 1, say"}  # one field a line: commas stay in descriptions
    assert constraint_from_flags(None, True) == JSON_OBJECT and constraint_from_flags(None, False) is None


@pytest.mark.parametrize("value", ["age integr", "", "name, 9lives"])
def test_concise_form_errors(value: str) -> None:
    with pytest.raises(UsageError):
        parse_schema(value)


def test_concise_form_takes_json_schemas_type_names_and_suggests_for_a_typo() -> None:
    """`age integer` was refused with "use one of str, int, float, bool" (found hands-on)."""
    props = parse_schema("age integer, ok boolean, x number, s string")["properties"]
    assert [p["type"] for p in props.values()] == ["integer", "boolean", "number", "string"]
    with pytest.raises(UsageError) as caught:
        parse_schema("age integr")
    assert "did you mean 'integer'?" in str(caught.value)


def test_a_saved_schema_is_said_on_continuing_and_no_schema_drops_it(model, isolated_home):
    """`ask --schema` saves the schema with the conversation; a later `ask -c` replied in JSON
    without a word about why, and nothing could turn it off."""
    first = qwenchat(["ask", "-m", model, "--json-object", "--seed", "1", "--max-tokens", "60", "a shirt"], isolated_home)
    assert first.returncode in (0, 1), first.stderr  # 1: a random model's JSON may be cut by the limit
    again = qwenchat(["ask", "-c", "--seed", "1", "--max-tokens", "5", "and a hat"], isolated_home)
    assert b"replies in JSON" in again.stderr and b"--no-schema" in again.stderr
    free = qwenchat(["ask", "-c", "--no-schema", "--json", "--seed", "1", "--max-tokens", "5", "in words"], isolated_home)
    assert free.returncode == 0, free.stderr
    assert b"replies in JSON" not in free.stderr and "parsed" not in json.loads(free.stdout)
    assert stored(isolated_home)[-2][1] == "in words"  # no schema instruction added to the message
    later = qwenchat(["ask", "-c", "--seed", "1", "--max-tokens", "5", "more"], isolated_home)
    assert b"replies in JSON" not in later.stderr  # dropped for the conversation, not just one reply


def test_no_schema_with_a_schema_is_a_usage_error():
    with pytest.raises(UsageError, match="--no-schema given with"):
        constraint_from_flags("name", False, no_schema=True)
