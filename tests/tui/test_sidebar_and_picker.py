"""The sidebar (day groups, each chat's model, search: Enter, Escape, newer chats stay) and the
model picker (a path field, the models used before, tags shown as written)."""

from __future__ import annotations

import threading
from datetime import date

from textual import events
from textual.widgets import Input, Label, OptionList

from qwenchat.tui.screens.models import ModelPicker
from qwenchat.tui.widgets.sidebar import ConversationItem, DayHeader, day_label
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, make_app, ready, send, texts


def test_day_labels():
    today = date(2026, 11, 27)
    assert day_label("2026-11-27T09:00:00+00:00", today) in ("Today", "Yesterday")  # local time may shift
    assert day_label("2026-11-26T12:00:00+00:00", today) in ("Yesterday", "Today", "2026-11-25")
    assert day_label("2026-10-01T12:00:00+00:00", today) == "2026-10-01"
    assert day_label("not a date", today) == "Older"


async def test_sidebar_groups_by_day_and_shows_each_chats_model(store):
    old = store.create_conversation("qwen-old", None)
    store.add_message(old.id, "user", "an old question")
    store._conn.execute("UPDATE conversations SET updated_at = '2025-01-02T10:00:00+00:00' WHERE id = ?", (old.id,))
    store._conn.commit()
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "a new question")
        items = list(app.chat.sidebar.list_view.children)
        headers = [str(i.query_one("Label").render()) for i in items if isinstance(i, DayHeader)]
        assert headers == ["Today", "2025-01-02"]
        convs = [i for i in items if isinstance(i, ConversationItem)]
        shown = [" ".join(str(label.render()) for label in c.query("Label")) for c in convs]
        assert shown == ["a new question fake-model", "an old question qwen-old"]


async def test_search_enter_opens_the_first_match_and_escape_clears(store):
    app, _ = make_app(script=["r1", "r2", "r3"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "about apples")
        apples = app.session.conversation_id
        await pilot.press("ctrl+n")
        await send(pilot, "about pears")
        await pilot.press("ctrl+f")
        await pilot.press(*"apples")
        await pilot.pause(0.3)
        await wait_for(pilot, lambda: app.chat.sidebar.conversation_ids == [apples])
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.session.conversation_id == apples)
        assert app.focused is app.chat.input and texts(app)[0][1] == "about apples"
        await pilot.press("ctrl+f", "escape")
        await wait_for(pilot, lambda: len(app.chat.sidebar.conversation_ids) == 2)
        assert app.chat.sidebar.search_box.value == "" and app.focused is app.chat.input


async def test_a_search_that_matches_nothing_says_so(store):
    """An empty list with no word of why (a new-user run)."""
    app, _ = make_app(script=["r1"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "about apples")
        app.chat.sidebar.search_box.value = "pirates"
        await wait_for(pilot, lambda: app.chat.sidebar.conversation_ids == [])
        lines = [str(label.render()) for label in app.chat.sidebar.list_view.query(Label)]
        assert lines == ["No chat matches"]
        app.chat.sidebar.search_box.value = ""
        await wait_for(pilot, lambda: len(app.chat.sidebar.conversation_ids) == 1)
        assert "No chat matches" not in [str(label.render()) for label in app.chat.sidebar.list_view.query(Label)]


async def test_a_search_never_hides_a_chat_created_after_it(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "about apples")
        app.chat.sidebar.search_box.value = "apples"
        await wait_for(pilot, lambda: len(app.chat.sidebar.conversation_ids) == 1)
        await pilot.press("ctrl+n")
        await send(pilot, "something else entirely")
        new = app.session.conversation_id
        await wait_for(pilot, lambda: new in app.chat.sidebar.conversation_ids)
        assert app.chat.sidebar.search_box.value == "apples"


async def test_model_picker_path_field_used_models_and_visible_tags(store, tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    used = store.create_conversation(str(folder), None)
    store.add_message(used.id, "user", "hi")
    app, factory = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPicker))
        options = app.screen.query_one(OptionList)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert labels[0].endswith(f"{folder} [folder]")
        assert any(label.endswith("]") and "[" in label for label in labels[1:])  # tags are shown
        path = app.screen.query_one("#path", Input)
        path.focus()
        path.value = str(tmp_path / "missing.gguf")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ModelPicker)
        assert "is not a model's name, a folder or a .gguf file" in str(app.screen.query_one("#path-error").render())
        path.value = str(folder)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(factory.made) == 2)
        await wait_for(pilot, lambda: app.session is factory.made[1])
        assert app.session.model_label == str(folder)
        # a listed name typed into the field (what a user does, seeing it) is taken, not a path
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPicker))
        name = next(key for key, _ in app.screen.choices if not key.startswith("/"))
        path = app.screen.query_one("#path", Input)
        path.focus()
        path.value = name
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(factory.made) == 3)
        assert factory.made[2].model_label == name


async def test_the_list_highlights_a_chat_when_focused_and_letters_typed_there_reach_the_message_box(store):
    """Tab onto the chat list highlighted nothing, and letters typed there went nowhere (found by
    a helper's hands-on session): now a chat is highlighted, and typing goes to the message box."""
    app, _ = make_app(script=["r1", "r2"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "about apples")
        await pilot.press("ctrl+n")
        lv = app.chat.sidebar.list_view
        lv.index = None
        lv.focus()
        await pilot.pause()
        assert isinstance(lv.highlighted_child, ConversationItem)
        await pilot.press(*"Hello there")  # the space right behind the first letters too
        assert app.focused is app.chat.input and app.chat.input.text == "Hello there"
        app.chat.input.text = ""
        lv.focus()
        await pilot.pause()
        app.post_message(events.Paste("def f():\n    return 1\n"))  # a bracketed paste on the list
        await pilot.pause()
        await pilot.pause()
        assert app.focused is app.chat.input and app.chat.input.text == "def f():\n    return 1\n"
        lv.focus()
        await pilot.pause()
        await pilot.press("space")
        assert app.chat.input.text.endswith("1\n ")


async def test_a_sidebar_refresh_that_changes_nothing_keeps_the_rows(store):
    """Ctrl+N rebuilt the list (blank for ~0.4 s), and Enter pressed then on a chat was lost
    (found by a helper's hands-on session): unchanged rows stay, only the highlight moves."""
    app, _ = make_app(script=["r1"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "about apples")
        cid = app.session.conversation_id
        rows = list(app.chat.sidebar.list_view.children)
        await pilot.press("ctrl+n")
        await pilot.pause()
        lv = app.chat.sidebar.list_view
        assert list(lv.children) == rows and lv.index is None  # the same widgets; nothing current
        lv.focus()
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.session.conversation_id == cid)


async def test_a_new_chat_is_listed_and_highlighted_as_its_reply_begins(store):
    """A new-user run: the chat appeared in the sidebar only once its first reply had ended."""
    hold = threading.Event()
    app, _ = make_app(hold=hold, default="partial answer that never ends")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        try:
            app.chat.input.text = "a first question"
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.chat.chatlog.views[-1].text == "partial")
            cid = app.session.conversation_id
            await wait_for(pilot, lambda: app.chat.sidebar.conversation_ids == [cid])
            assert app.chat.sidebar.highlighted_id == cid and app.chat.generating
        finally:
            hold.set()
        await wait_for(pilot, lambda: not app.chat.generating)


async def test_chats_another_window_makes_or_answers_show_in_an_idle_sidebar(store, fast_follow):
    """`qwenchat ask` in another terminal: its chat was listed only after the next reply here."""
    app, _ = make_app(script=["r1"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "mine")
        mine = app.session.conversation_id
        theirs = store.create_conversation("fake-model", None, title="from ask")  # another connection
        store.add_message(theirs.id, "user", "from ask")
        await wait_for(pilot, lambda: app.chat.sidebar.conversation_ids == [theirs.id, mine])
        store.add_message(mine, "user", "ask -c in another terminal")  # moves to the top
        await wait_for(pilot, lambda: app.chat.sidebar.conversation_ids == [mine, theirs.id])
        assert app.chat.sidebar.highlighted_id == mine  # the open chat stays highlighted


def test_a_typed_path_of_a_user_that_does_not_exist_is_a_problem_not_a_crash():
    """`~nosuchuser/model` in Ctrl+O: Path.expanduser raised RuntimeError, and the app crashed."""
    from qwenchat.tui.screens.models import check_path

    assert check_path("~nosuchuser0/model") == "~nosuchuser0/model is not a model's name, a folder or a .gguf file"


def test_the_picker_marks_the_users_default_not_the_built_in_one(tmp_path, monkeypatch):
    """The first alias's label said "(default)" whatever the config chose, and a folder set as
    the default was not offered unless a chat had used it."""
    from qwenchat.tui.screens.models import model_choices

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("QWENCHAT_MODEL", str(folder))
    labels = dict(model_choices())
    assert labels[str(folder)].endswith(f"{folder} (default) [folder]")
    assert [name for name, label in labels.items() if "(default)" in label] == [str(folder)]
