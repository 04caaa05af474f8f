"""Small and resized terminals: the sidebar hides below a width and Ctrl+B brings it over the
chat; 60x15 is usable; a resize mid-reply keeps following it; too small shows a notice."""

from __future__ import annotations

from tests.tui.conftest import wait_for
from tests.tui.helpers import make_app, ready
from tests.tui.screen_text import screen_text

LONG = " ".join(f"w{i}" for i in range(300))
LONGER = " ".join(f"w{i}" for i in range(1000))


async def test_narrow_terminal_hides_the_sidebar_and_ctrl_b_shows_it_over_the_chat():
    app, _ = make_app()
    async with app.run_test(size=(70, 30)) as pilot:
        await ready(pilot)
        sidebar, log = app.chat.sidebar, app.chat.chatlog
        assert sidebar.region.width == 0 and log.region.x == 0
        width = log.region.width
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert sidebar.region.width > 0 and sidebar.region.x == 0
        assert log.region.width == width  # over the chat, not beside it
        await pilot.press("escape")
        await pilot.pause()
        assert sidebar.region.width == 0 and app.focused is app.chat.input
        await pilot.resize_terminal(110, 30)
        await pilot.pause()
        assert sidebar.region.width > 0 and log.region.x >= sidebar.region.width


async def test_60x15_is_usable():
    app, _ = make_app(script=["first line\nsecond line"])
    async with app.run_test(size=(60, 15)) as pilot:
        await ready(pilot)
        app.chat.input.focus()
        await pilot.press(*"hello", "ctrl+j", *"there")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.pause()
        shown = screen_text(app)
        for line in ("hello", "there", "first line", "second line"):
            assert line in shown
        assert app.chat.chatlog.region.height >= 5 and app.chat.input.region.height >= 3


async def test_too_small_shows_a_notice_and_comes_back():
    app, _ = make_app()
    async with app.run_test(size=(30, 8)) as pilot:
        await ready(pilot)
        await pilot.pause()
        assert "too small" in screen_text(app)
        assert app.chat.chatlog.region.height == 0
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert "too small" not in screen_text(app) and app.chat.chatlog.region.height > 0


async def test_an_opened_chat_stays_at_its_end_through_a_resize():
    app, _ = make_app(default=LONGER, max_new_tokens=5000)
    async with app.run_test(size=(110, 34)) as pilot:
        await ready(pilot)
        app.chat.input.text = "go on"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating)
        app.chat.chatlog.anchor(False)  # as in a fresh start: no reply streamed here yet
        await app.chat.show_conversation()  # as when the chat is picked in the sidebar
        await pilot.pause()
        log = app.chat.chatlog
        assert log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y


async def test_typing_after_the_too_small_notice_reaches_the_input_again():
    """The notice hides the widgets, which blurs the input; coming back focuses it again, and
    what was typed meanwhile is in it (it was dropped)."""
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.chat.input.focus()
        await pilot.press(*"Say")
        await pilot.resize_terminal(30, 8)
        await pilot.pause()
        await pilot.press(*" hix", "backspace", "enter")  # typed while the notice shows: kept, nothing sent
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.press(*" there")
        assert app.focused is app.chat.input and app.chat.input.text == "Say hi there"
        assert not app.chat.generating and app.session.entries == []


async def test_a_resize_mid_reply_keeps_following_it():
    app, _ = make_app(default=LONGER, delay=0.005, max_new_tokens=5000)
    async with app.run_test(size=(110, 34)) as pilot:
        await ready(pilot)
        app.chat.input.text = "go on"
        await pilot.press("enter")
        log = app.chat.chatlog
        await wait_for(pilot, lambda: log.max_scroll_y > 3, timeout=20)
        await pilot.resize_terminal(60, 15)
        grown = len(app.chat.chatlog.views[-1].text) + 400
        await wait_for(pilot, lambda: len(app.chat.chatlog.views[-1].text) > grown, timeout=20)
        await pilot.pause(0.2)
        assert app.chat.generating, "the reply ended too soon for this test"
        assert log.scroll_y == log.max_scroll_y
        await wait_for(pilot, lambda: not app.chat.generating, timeout=30)
        await pilot.pause(0.2)
        assert log.scroll_y == log.max_scroll_y
        assert "w999" in screen_text(app)


async def test_scrolling_up_mid_reply_stops_following(store):
    app, _ = make_app(default=LONG, delay=0.01)
    async with app.run_test(size=(110, 34)) as pilot:
        await ready(pilot)
        app.chat.input.text = "warm up"  # a long chat to scroll in
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating, timeout=30)
        app.chat.input.text = "again"
        await pilot.press("enter")
        log = app.chat.chatlog
        await wait_for(pilot, lambda: len(app.chat.chatlog.views[-1].text) > 100, timeout=20)
        await pilot.press("pageup")
        await pilot.pause(0.3)
        assert log.scroll_y < log.max_scroll_y - 5  # the user reads; the reply does not pull them down


async def test_sidebar_hidden_in_a_wide_terminal_still_opens_over_a_narrow_one():
    app, _ = make_app()
    async with app.run_test(size=(110, 30)) as pilot:
        await ready(pilot)
        sidebar = app.chat.sidebar
        await pilot.press("ctrl+b")  # hidden while wide
        await pilot.pause()
        assert sidebar.region.width == 0
        await pilot.resize_terminal(70, 30)
        await pilot.press("ctrl+b")  # narrow now: over the chat
        await pilot.pause()
        assert sidebar.region.width > 0 and app.chat.chatlog.region.x == 0
        await pilot.resize_terminal(110, 30)  # wide again: beside the chat, no overlay left over
        await pilot.pause()
        assert not app.chat.has_class("-sidebar-open")
        assert app.chat.chatlog.region.x >= sidebar.region.width > 0


async def test_the_sidebar_still_hides_in_a_narrow_terminal_after_search_or_ctrl_b_showed_it():
    """Found in tmux: after Ctrl+F (or Ctrl+B twice) in a wide terminal the sidebar stayed docked
    below 80 columns, squeezing the chat to 40 of 70."""
    for keys in (("ctrl+f", "escape"), ("ctrl+b", "ctrl+b"), ("ctrl+b", "ctrl+f", "escape")):
        app, _ = make_app()
        async with app.run_test(size=(110, 30)) as pilot:
            await ready(pilot)
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
            assert app.chat.sidebar.region.width > 0, keys
            await pilot.resize_terminal(70, 30)
            await pilot.pause()
            assert app.chat.sidebar.region.width == 0 and app.chat.chatlog.region.x == 0, keys
            await pilot.resize_terminal(110, 30)
            await pilot.pause()
            assert app.chat.sidebar.region.width > 0, keys


async def test_dialogs_fit_a_60_column_terminal(store):
    from qwenchat.tui.screens.dialogs import EditMessageScreen

    app, _ = make_app()
    async with app.run_test(size=(60, 15)) as pilot:
        await ready(pilot)
        app.chat.input.text = "hello"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating)
        for key, kind in (("ctrl+g", EditMessageScreen), ("ctrl+s", None), ("ctrl+o", None), ("f1", None)):
            await pilot.press(key)
            await wait_for(pilot, lambda: app.screen is not app.chat)
            box = app.screen.query_one("Vertical")
            assert box.region.x >= 0 and box.region.right <= 60 and box.region.bottom <= 15, (key, box.region)
            assert kind is None or isinstance(app.screen, kind)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.chat)
