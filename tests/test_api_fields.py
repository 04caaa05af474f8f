"""qwenchat/api_fields.py: the API names of the generation options, shared by serve and remote."""

import pytest

from qwenchat.api_fields import API_FIELDS, constraint_of, option_of_field, response_format
from qwenchat.engine.records import OPTION_RANGES


def test_every_ranged_option_has_an_api_name():
    """A new generation option is declared in OPTION_RANGES; it must get its API name here too,
    or serve would ignore it and a remote engine never send it."""
    assert set(API_FIELDS) == set(OPTION_RANGES)


def test_request_names_map_back_to_options():
    back = option_of_field()
    assert all(back[api] == option for option, api in API_FIELDS.items())
    assert back["max_completion_tokens"] == back["max_tokens"] == "max_new_tokens"


@pytest.mark.parametrize("constraint", ["json_object", {"type": "object", "properties": {"a": {"type": "string"}}}])
def test_response_format_round_trips(constraint):
    assert constraint_of(response_format(constraint)) == constraint


def test_plain_text_and_bad_formats():
    assert constraint_of(None) is None and constraint_of({"type": "text"}) is None
    with pytest.raises(ValueError, match="json_schema.schema"):
        constraint_of({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(ValueError, match="'xml' is not supported"):
        constraint_of({"type": "xml"})
