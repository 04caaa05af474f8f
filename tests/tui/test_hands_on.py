"""Defects met by using the app in a real terminal with the real model (a hands-on session);
each test fails without its fix."""

from __future__ import annotations

import asyncio

import pytest

from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, burst, make_app, ready, send, status_text, texts


async def test_a_redraw_racing_a_new_bubble_does_not_crash(store):
    """Ctrl+N then a message sent at once (seen at 120x40 with the real model): the new chat's
    redraw (the key's action, on the app's task) and the message's bubble (the send, on the
    screen's) ran interleaved, a bubble was removed before it had mounted, and the app died
    with NoMatches ('.details') and a traceback. Made certain here: both at the same time."""

    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        log = app.chat.chatlog
        await asyncio.gather(log.add("user", "hi"), log.show([]), log.add("user", "again"), log.show([]))
        await pilot.pause(0.2)
        assert app.return_code is None and app.is_running


def test_a_crashed_app_exits_with_a_failure_status(monkeypatch):
    """The crash above ended `qwenchat` with status 0 under its traceback: a script or a
    wrapper could not tell it from a normal quit."""
    import pytest

    import qwenchat.tui
    from qwenchat.tui import run_app
    from qwenchat.tui.app import QwenchatApp

    def crashed_run(self, *args, **kwargs):  # what Textual leaves after an unhandled error
        self._return_code = 1

    monkeypatch.setattr(QwenchatApp, "run", crashed_run)
    monkeypatch.setattr(qwenchat.tui, "need_a_terminal", lambda: None)  # pytest's streams are not one
    with pytest.raises(SystemExit) as ended:
        run_app(lambda *a: None)
    assert ended.value.code == 1


async def test_typing_in_the_model_picker_goes_into_the_path_field(store, tmp_path):
    """Ctrl+O, a typed path and Enter (seen hands-on): the list had the focus, the letters went
    nowhere and Enter picked the first model of the list, starting a download nobody asked for."""
    from textual.widgets import Input

    from qwenchat.tui.screens.models import ModelPicker

    app, factory = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.press(*"/no/such", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ModelPicker)  # not dismissed with a listed model
        assert app.screen.query_one("#path", Input).value == "/no/such"
        assert "is not a model's name, a folder or a .gguf file" in str(app.screen.query_one("#path-error").render())
        assert len(factory.made) == 1


async def test_the_model_picker_starts_on_the_model_in_use(store):
    from textual.widgets import OptionList

    from qwenchat.tui.screens.models import ModelPicker, model_choices

    keys = [key for key, _ in model_choices()]
    assert len(keys) > 1
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        picked: list = []
        app.push_screen(ModelPicker(keys[-1], []), picked.append)
        await pilot.pause()
        assert app.screen.query_one(OptionList).highlighted == len(keys) - 1
        await pilot.press("enter")
        await pilot.pause()
        assert picked == [keys[-1]]


@pytest.mark.parametrize("in_one_read", [False, True])
async def test_letters_typed_on_a_focused_message_go_into_the_box_and_enter_sends(store, in_one_read):
    """After Alt+Left (a branch switch) or the edit dialog, a message has the focus; what the
    user typed next vanished, and Enter sent nothing (seen hands-on). Typed quickly (one read from
    the terminal), the letters reached the box but the Enter behind them went to the message that
    still had the focus: nothing was sent (5 of 8 tries, a new-user run)."""
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        await pilot.press("alt+up")
        assert app.focused is app.chat.chatlog.views[-1]
        if in_one_read:
            await burst(pilot, "Say maybe.\r")
        else:
            await pilot.press(*"Say maybe.")
            assert app.focused is app.chat.input and app.chat.input.text == "Say maybe."
            await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and len(texts(app)) == 4)
        assert [t[1] for t in texts(app) if t[0] == "user"] == ["first", "Say maybe."]
        assert app.focused is app.chat.input and app.chat.input.text == ""


def shown_ctx(app) -> int:
    return int(status_text(app).split("ctx ", 1)[1].split("/", 1)[0])


async def test_the_live_context_meter_counts_the_new_prompt(store):
    """While a reply streamed, the meter grew from the conversation as it was before the send
    (or, on Ctrl+R, with the old reply still in it): 'ctx 161' while the prompt was ~122."""
    import threading

    hold = threading.Event()
    app, _ = make_app(hold=hold, script=["alpha beta gamma", "delta epsilon zeta"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        hold.set()
        await send(pilot, "first question")
        hold.clear()
        try:
            app.chat.input.text = "a second, longer question than the first"
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.chat.buffer.tokens == 1 and "1 tok" in status_text(app))
            assert shown_ctx(app) == app.session.context_used() + 1  # the new message is counted
        finally:
            hold.set()
        await wait_for(pilot, lambda: not app.chat.generating)


async def test_the_context_meter_reads_the_same_after_a_reply_and_after_reopening_the_chat(store):
    """It read 300 when the reply ended and 305 once the chat was opened again from the sidebar
    (the template's closing tokens after the reply; seen hands-on)."""
    app, _ = make_app(script=["alpha beta gamma"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first question")
        after_reply, cid = shown_ctx(app), app.session.conversation_id
        await pilot.press("ctrl+n")
        await app.chat.open_conversation(cid)
        assert shown_ctx(app) == after_reply == app.session.context_used()


async def test_the_context_meter_after_a_continued_reply_counts_it_once(store):
    """After F5 the meter showed the prompt (which held the first part of the reply) plus the
    whole reply: 549 where the conversation took 482 (seen hands-on)."""
    app, _ = make_app(max_new_tokens=3, script=["one two three four", "five six"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await pilot.press("f5")
        await wait_for(pilot, lambda: not app.chat.generating and "five" in app.chat.chatlog.views[-1].text)
        assert shown_ctx(app) == app.session.context_used()


async def test_a_dialog_title_longer_than_the_dialog_wraps(store):
    """The edit dialog's title ended 'the later repli' at 120x40: cut, not wrapped."""
    from qwenchat.tui.screens.dialogs import EditMessageScreen
    from tests.tui.screen_text import screen_text

    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.push_screen(EditMessageScreen("a message"))
        await pilot.pause()
        text = " ".join(screen_text(app).replace("█", " ").split())
        assert "the later replies are replaced)" in text


async def test_ctrl_n_while_a_message_is_being_sent_waits_its_turn(store):
    """A message sent and Ctrl+N right after it (seen hands-on): the new chat's redraw ran in
    the middle of the send, the user's bubble vanished and the reply stood alone."""
    from qwenchat.tui.widgets.prompt_input import PromptInput

    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        chat = app.chat
        await asyncio.gather(chat.on_prompt_input_submitted(PromptInput.Submitted("ok")), chat.action_new_chat())
        await wait_for(pilot, lambda: not chat.generating)
        await pilot.pause(0.2)
        shown = [(v.role, v.text) for v in chat.chatlog.views]
        stored = [(e.role, e.content) for e in app.session.entries]
        assert shown == stored and ("user", "ok") in shown
