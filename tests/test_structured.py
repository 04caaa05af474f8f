"""structured.py's SCHEMA errors: each names the problem and the fix (found hands-on: a directory
was "not found", a comma in a description or a two-word name gave "field 'x' has type 'y'")."""

from __future__ import annotations

import pytest

from qwenchat.errors import UsageError
from qwenchat.structured import constraint_from_flags, from_text, parse_schema


def _error(value: str) -> UsageError:
    with pytest.raises(UsageError) as caught:
        constraint_from_flags(value, False)
    assert caught.value.exit_code == 2
    return caught.value


def test_a_directory_is_said_to_be_one_with_what_is_expected(tmp_path) -> None:
    e = _error(str(tmp_path))
    assert e.message == f"{tmp_path} is a directory, not a schema file"
    assert "JSON Schema file" in e.hint and "inline" in e.hint and "'name, age int'" in e.hint


def test_a_missing_file_is_still_not_found(tmp_path) -> None:
    assert _error(str(tmp_path / "shirt.json")).message.endswith("not found")


def test_a_comma_in_a_description_says_commas_separate_fields_and_how_to_keep_it() -> None:
    e = _error("name: a name, with comma")
    assert e.message == "--schema: 'with comma' is not a field; on one line commas separate fields, " \
                        "so a description cannot hold a comma"
    assert "one field a line" in e.hint and "$'bio: short, plain\\nage int'" in e.hint


def test_the_form_the_comma_hint_shows_keeps_the_comma() -> None:
    assert parse_schema("bio: short, plain\nage int")["properties"]["bio"]["description"] == "short, plain"
    one = parse_schema("name: a name, with comma\n")  # one field: the newline after it says so
    assert one["properties"] == {"name": {"type": "string", "description": "a name, with comma"}}


def test_the_apps_field_cannot_hold_lines_so_its_hint_is_a_json_schema() -> None:
    with pytest.raises(UsageError) as caught:
        from_text("name: a name, with comma")
    assert caught.value.message.startswith("the JSON output schema: 'with comma' is not a field")
    assert caught.value.hint.startswith("give a JSON schema")


@pytest.mark.parametrize(("value", "message", "joined"), [
    ("my name, age integer", "--schema field 'my name': a field name is one word, and 'name' is not a type", "'my_name'"),
    ("my name int", "--schema field 'my name int': a field name is one word", "'my_name int'"),
    ("full name: as written", "--schema field 'full name: as written': a field name is one word, and 'name' is not a type",
     "'full_name: as written'"),
])
def test_a_two_word_name_says_names_are_one_word_and_joins_them(value: str, message: str, joined: str) -> None:
    e = _error(value)
    assert e.message == message and e.hint.startswith(f"join the words: {joined}")


def test_a_typo_in_a_type_is_still_taken_for_one() -> None:
    assert _error("age integr").hint.startswith("did you mean 'integer'?")
    assert _error("bio: short, age integr").hint.startswith("did you mean 'integer'?")  # not the comma
    assert _error("x itn").hint.startswith("did you mean 'int'?")


def test_a_slash_in_a_description_is_not_taken_for_a_path() -> None:
    """'url: ... https://...' was "schema file ... not found"."""
    schema = parse_schema("title, url: the page (https://example.org)")
    assert list(schema["properties"]) == ["title", "url"]


def test_the_comma_form_with_a_newline_after_it_is_still_the_comma_form() -> None:
    """'name, age int\n' (as a script may pass it) was "field 'name, age int' is not a field"
    once a newline made the form one field a line."""
    assert parse_schema("name, age int\n") == parse_schema("name, age int")
    assert list(parse_schema("name, age int\nbio: short, plain")["properties"]) == ["name", "age", "bio"]


@pytest.mark.parametrize("value", ["name, name", "name\nage int\nname: again"])
def test_a_field_named_twice_is_refused(value: str) -> None:
    """`--schema 'name, name'` printed {"name": ...} and exit 0: the second replaced the first."""
    e = _error(value)
    assert e.message == "--schema names the field 'name' twice" and "once" in e.hint
