"""Keys: no bare letter fires an action, scrolling and moving between messages from the keyboard,
Esc back to the input, Ctrl+C stops a reply, Ctrl+B from the search box, the edit dialog."""

from __future__ import annotations

import threading

from textual.widgets import ListView

from qwenchat.tui.screens.dialogs import EditMessageScreen
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, make_app, notes, ready, send, texts

LONG = " ".join(f"word{i}" for i in range(400))


def bare_letter_keys(app) -> list[str]:
    """Keys bound anywhere in the focused widget's chain that are one unmodified character."""
    out = []
    for _node, bindings in app.screen._binding_chain:
        for key in bindings.key_to_bindings:
            if len(key) == 1 and key.isprintable():
                out.append(key)
    return out


async def test_typing_on_a_focused_message_fires_nothing(store):
    app, _ = make_app(script=["Try:\n```\ncode\n```"])
    copied: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.copy_to_clipboard = copied.append
        await ready(pilot)
        await send(pilot, "question")
        for view in app.chat.chatlog.views:
            view.focus()
            await pilot.pause()
            assert bare_letter_keys(app) == []
            await pilot.press(*"check edit")
            await pilot.pause()
            assert copied == [] and not isinstance(app.screen, EditMessageScreen)
        assert [t[1] for t in texts(app)] == ["question", "Try:\n```\ncode\n```"]


async def test_page_keys_scroll_the_chat_from_the_input(store):
    app, _ = make_app(default=LONG)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "long please")
        log, box = app.chat.chatlog, app.chat.input
        await wait_for(pilot, lambda: log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y)
        box.focus()
        await pilot.press("pageup")
        await wait_for(pilot, lambda: log.scroll_y < log.max_scroll_y)
        await pilot.press("ctrl+home")
        await wait_for(pilot, lambda: log.scroll_y == 0)
        await pilot.press("ctrl+end")
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y)
        await pilot.press("home")  # an empty box: Home and End scroll too
        await wait_for(pilot, lambda: log.scroll_y == 0)
        await pilot.press("end")
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y)
        await pilot.press("pageup", "pagedown")
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y)
        box.text = "abc"
        box.move_cursor((0, 3))
        await pilot.press("home")  # a box with text: Home moves the cursor, the chat stays
        await pilot.pause()
        assert box.cursor_location == (0, 0) and log.scroll_y == log.max_scroll_y
        assert app.focused is box and box.text == "abc"


async def test_moving_between_messages_and_back_to_the_input(store):
    app, _ = make_app(script=["r1", "r2"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "m1")
        await send(pilot, "m2")
        views = app.chat.chatlog.views
        assert app.focused is app.chat.input
        await pilot.press("alt+up")
        assert app.focused is views[3]
        await pilot.press("up", "up")
        assert app.focused is views[1]
        await pilot.press("alt+up")
        assert app.focused is views[0]
        await pilot.press("down")
        assert app.focused is views[1]
        await pilot.press("escape")  # one key back to the input from anywhere
        assert app.focused is app.chat.input
        app.chat.query_one("#conversations", ListView).focus()
        await pilot.press("escape")
        assert app.focused is app.chat.input
        await pilot.press("alt+up", "down")  # past the last message: back to the box
        assert app.focused is app.chat.input


async def test_ctrl_c_stops_a_streaming_reply_and_otherwise_hints(store):
    hold = threading.Event()
    app, factory = make_app(hold=hold, default="partial answer that never ends")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.text = "go"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.chatlog.views[-1].text == "partial")
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.chat.generating)
        assert texts(app)[-1] == ("assistant", "partial", "interrupted")
        assert app.is_running
        app.chat.chatlog.views[0].focus()
        await pilot.press("ctrl+c")  # no reply: today's hint
        await wait_for(pilot, lambda: any("quit" in n.lower() for n in notes(app)))
        assert app.is_running
        app.clear_notifications()
        app.chat.input.text = "typed"
        app.chat.input.focus()
        await pilot.press("ctrl+c")  # in the message box (where the cursor is) it did nothing at all
        await wait_for(pilot, lambda: any("ctrl+q" in n.lower() for n in notes(app)))
        app.clear_notifications()
        app.chat.input.select_all()
        await pilot.press("ctrl+c")  # with text selected: a copy, no hint
        await pilot.pause(0.2)
        assert app.clipboard == "typed" and not notes(app) and app.is_running
    cid = factory.made[0].conversation_id
    assert store.thread(cid)[-1].status == "interrupted"


def footer_keys(app) -> dict[str, str]:
    """The footer's entries now: key -> description."""
    return {key: active.binding.description for key, active in app.screen.active_bindings.items()
            if active.binding.show}


async def test_the_footer_offers_esc_only_while_a_reply_streams_and_esc_still_stops_it(store):
    hold = threading.Event()
    app, factory = make_app(hold=hold, default="partial answer that never ends")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "escape" not in footer_keys(app)  # an idle chat showed "esc Stop reply"
        app.chat.input.text = "go"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.chatlog.views[-1].text == "partial")
        assert footer_keys(app)["escape"] == "Stop reply"
        app.chat.chatlog.views[0].focus()
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)
        assert "escape" not in footer_keys(app)
        assert texts(app)[-1] == ("assistant", "partial", "interrupted")
        await pilot.press("escape")  # idle: Esc goes back to the message box as before
        assert app.focused is app.chat.input
    assert store.thread(factory.made[0].conversation_id)[-1].status == "interrupted"


async def test_ctrl_b_from_the_search_box_keeps_focus_visible():
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+f")
        assert app.focused is app.chat.sidebar.search_box
        await pilot.press("ctrl+b")
        assert not app.chat.sidebar.display
        assert app.focused is app.chat.input
        await pilot.press("ctrl+b")
        assert app.chat.sidebar.display


async def test_edit_dialog_sends_with_enter_and_starts_at_the_end(store):
    app, factory = make_app(script=["a1", "a2"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        app.chat.chatlog.views[1].focus()  # the reply: edits the message it answers
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, EditMessageScreen))
        box = app.screen.query_one("#text")
        assert app.focused is box and box.cursor_location == (0, len("first"))
        await pilot.press("ctrl+j", *"more", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, EditMessageScreen))
        await wait_for(pilot, lambda: not app.chat.generating and texts(app)[-1][1] == "a2")
        assert [t[1] for t in texts(app)] == ["first\nmore", "a2"]
    assert [m.content for m in store.thread(factory.made[0].conversation_id)] == ["first\nmore", "a2"]
