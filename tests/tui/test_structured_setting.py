"""The app's per-conversation JSON output setting (issue 17): set in the sampling dialog, saved
with the conversation, shown in the status bar while on."""

from __future__ import annotations

import threading

import pytest
from textual.widgets import Input

from qwenchat.tui.screens.settings import SettingsScreen
from tests.tui.conftest import wait_for
from tests.tui.screen_text import screen_lines
from tests.tui.helpers import open_sampling
from tests.tui.test_app import SIZE, make_app, ready, send


async def test_schema_setting_saved_and_shown_in_status_bar(store):
    app, factory = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        assert "JSON" not in str(app.query_one("#status").render())
        screen = await open_sampling(pilot)
        field = screen.query_one("#constraint", Input)
        field.value = "name, age integr"  # not a type the concise form knows
        await pilot.pause()
        assert field.has_class("-invalid") and "integr" in str(screen.query_one("#constraint-error").render())
        field.value = "name, age int"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        schema = app.session.options.constraint
        assert schema["required"] == ["name", "age"] and schema["properties"]["age"] == {"type": "integer"}
        assert "JSON schema" in str(app.query_one("#status").render())
        screen = await open_sampling(pilot)  # shown again as typed (it came back as 130 characters of JSON)
        assert screen.query_one("#constraint", Input).value == "name, age int"
        screen.query_one("#constraint", Input).value = "json"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.session.options.constraint == "json_object"
    settings = store.get_conversation(factory.made[0].conversation_id).settings
    assert settings["constraint"] == "json_object"


@pytest.mark.parametrize("typed", ["", "  ", "off", "OFF", "none"])
def test_the_setting_turns_off_with_what_its_placeholder_says(typed):
    """The placeholder reads "off; json, ...": typing "off" set a schema with a field "off" and the
    next reply was {"off": "2"} (found hands-on)."""
    from qwenchat.structured import from_text

    assert from_text(typed) is None


@pytest.mark.parametrize("typed", ["{bad", "a b c d", "1x int", '{"type": "strin"}', '{"not": {"type": "string"}}'])
def test_a_bad_schema_in_the_app_names_the_setting_not_a_command_line_flag(typed):
    """The sampling dialog said "--schema is not valid JSON" (found hands-on): no flag is typed there."""
    from qwenchat.errors import UsageError
    from qwenchat.structured import from_text

    with pytest.raises(UsageError) as caught:
        from_text(typed)
    assert "--schema" not in str(caught.value) and str(caught.value).startswith("the JSON output schema")
    # the last two are valid JSON the engine cannot use: said in the dialog, not at the next send


JSON_REPLY = '{\n  "fruits": [\n    "apple",\n    "banana"\n  ]\n}'


def apple_indents(app) -> list[tuple[int, int]]:
    """For each reply on screen: the column of its '{' (2 further in when drawn in a code box, as
    JSON) and how far '"apple",' is indented from it."""
    lines = [line.split("▕")[-1] for line in screen_lines(app)]  # the chat, right of the sidebar
    return [(lines[i - 2].index("{"), lines[i].index('"') - lines[i - 2].index("{"))
            for i, line in enumerate(lines) if line.strip() == '"apple",']


async def test_a_json_reply_is_shown_and_copied_as_json_while_streaming_and_when_reopened(store):
    """With JSON output on, the reply was drawn as Markdown and lost its indentation (found hands-on)."""
    hold = threading.Event()
    hold.set()
    app, _ = make_app(script=[JSON_REPLY, JSON_REPLY], hold=hold)
    copied: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.copy_to_clipboard = copied.append  # OSC 52 has no terminal here
        await ready(pilot)
        await send(pilot, "fruits, no JSON output")  # written freely: Markdown, as it was
        screen = await open_sampling(pilot)
        screen.query_one("#constraint", Input).value = "json"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        hold.clear()  # the reply stops after its first word, streaming
        app.chat.input.text = "fruits as JSON"
        await pilot.press("enter")
        try:
            await wait_for(pilot, lambda: app.chat._reply_view is not None and app.chat._reply_view.text)
            streaming = app.chat._reply_view
            assert streaming.language == "json" and streaming.reply.language == "json"
        finally:
            hold.set()  # a failure must not leave the reply's thread waiting
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.pause()
        assert apple_indents(app) == [(2, 4), (4, 4)]  # Markdown, then JSON in its box
        await pilot.press("f9")  # from the input: the last reply with code, which is all of it
        await wait_for(pilot, lambda: copied)
        await pilot.press("f8")
        await wait_for(pilot, lambda: len(copied) == 2)
        assert copied == [JSON_REPLY, JSON_REPLY]
        cid = app.session.conversation_id
        await pilot.press("ctrl+n")
        await app.chat.open_conversation(cid)  # from history: each reply as it was written
        await pilot.pause()
        assert [v.language for v in app.chat.chatlog.views] == [None, None, None, "json"]
        assert apple_indents(app) == [(2, 4), (4, 4)]  # Markdown, then JSON in its box


@pytest.mark.parametrize("typed", ["name, age int, pet", "name, score float, ok bool, bio: a short bio", "json",
                                   '{"type": "object", "properties": {"a": {"type": "string", "description": "x, y"}}, '
                                   '"required": ["a"]}',
                                   # a type list has no concise form (it raised TypeError: unhashable)
                                   '{"type": "object", "properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]}'])
def test_a_schema_is_shown_again_in_the_shortest_form_that_says_it(typed):
    """The concise form when it reads back to the same schema; JSON when it cannot (a comma in a
    description, a field that is not required)."""
    from qwenchat.structured import from_text, to_text

    assert to_text(from_text(typed)) == typed  # as typed, in either form
    assert from_text(to_text(from_text(typed))) == from_text(typed)
