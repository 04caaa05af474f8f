"""The message box's text survives a quit (qwenchat/tui/draft.py): an unsent message was lost
without a word on Ctrl+Q (a second new-user run)."""

from __future__ import annotations

from qwenchat.tui import draft
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, make_app, notes, ready, send


async def test_an_unsent_message_is_back_in_the_box_at_the_next_start(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.text = "a long question,\n  typed but not sent"
        await pilot.press("ctrl+q")
    assert draft.draft_path().read_text() == "a long question,\n  typed but not sent"

    again, factory = make_app(script=["ok"])
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert again.chat.input.text == "a long question,\n  typed but not sent"
        assert any("unsent message from last time" in n for n in notes(again))
        await send(pilot, again.chat.input.text)
        await wait_for(pilot, lambda: again.chat.input.text == "")
        await pilot.press("ctrl+q")
    assert not draft.draft_path().exists()  # sent: nothing to bring back

    third, _ = make_app()
    async with third.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert third.chat.input.text == "" and not any("unsent" in n for n in notes(third))


def test_a_draft_that_cannot_be_kept_does_not_stop_the_quit(tmp_path, monkeypatch):
    from qwenchat import paths

    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setattr(paths, "data_dir", lambda: blocked)  # its folder cannot be made
    draft.keep("text")  # no exception
    assert draft.take() == ""
