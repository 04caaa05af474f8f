"""The chat as a user lives in it: per-conversation settings, browsing with no model, a failed
load, a refused message, greedy regenerate, a cut reply and Continue, the status bar, a chat
changed from another window, and user text that looks like markup."""

from __future__ import annotations

import threading

import pytest
from textual.widgets import Input

from qwenchat.engine.records import GenerateOptions
from qwenchat.errors import HubError
from qwenchat.session import ChatSession
from qwenchat.tui.app import QwenchatApp
from qwenchat.tui.screens.dialogs import PickScreen
from qwenchat.tui.screens.settings import SettingsScreen
from qwenchat.tui.widgets.sidebar import ConversationItem
from tests.fake_engine import FakeEngine, FakeInfo
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, make_app, notes, open_system_prompt, ready, send, status_text, texts


async def open_settings(pilot) -> SettingsScreen:
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen))
    return pilot.app.screen


async def close_settings(pilot, **values: str) -> None:
    screen = pilot.app.screen
    for name, value in values.items():
        screen.query_one(f"#{name}", Input).value = value
    await pilot.pause()
    await pilot.press("ctrl+s" if values else "escape")
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, SettingsScreen))


async def test_settings_dialog_shows_each_conversations_own_settings(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "chat A")
        a = app.session.conversation_id
        await open_settings(pilot)
        await close_settings(pilot, temperature="0.2")
        await pilot.press("ctrl+n")  # a new chat starts from the defaults
        screen = await open_settings(pilot)
        field = screen.query_one("#temperature", Input)
        assert field.value == "" and field.placeholder == "default: 0.7"
        await close_settings(pilot)
        await send(pilot, "chat B")
        b = app.session.conversation_id
        for cid, shown in ((a, "0.2"), (b, ""), (a, "0.2")):
            await app.chat.open_conversation(cid)
            screen = await open_settings(pilot)
            assert screen.query_one("#temperature", Input).value == shown, cid
            await close_settings(pilot)
    assert store.get_conversation(a).settings.get("temperature") == 0.2
    assert "temperature" not in (store.get_conversation(b).settings or {})


def failing_factory(model, store, progress):
    raise HubError("model nope is not downloaded", "run `qwenchat pull nope` first")


def stored_chat(store, title: str = "Old chat") -> int:
    conv = store.create_conversation("some-model", "Be brief.")
    user = store.add_message(conv.id, "user", "line one\n  line two")
    store.add_message(conv.id, "assistant", "an old answer", parent_id=user.id)
    store.rename_conversation(conv.id, title)
    return conv.id


async def test_browsing_needs_no_model(store):
    cid = stored_chat(store)
    app = QwenchatApp(failing_factory, theme="qwenchat-dark", persist_theme=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.load_error is not None)
        items = list(app.query(ConversationItem))
        assert [i.conversation_id for i in items] == [cid]
        await pilot.click(items[0])
        await wait_for(pilot, lambda: len(app.chat.chatlog.views) == 2)
        assert texts(app) == [("user", "line one\n  line two", "complete"),
                              ("assistant", "an old answer", "complete")]
        assert app.chat.viewing == cid and app.is_running


async def test_a_chat_opened_after_a_failed_load_loads_the_model_it_used(store):
    """No model (the default failed offline): a chat picked in the sidebar loads its own model, as
    `qwenchat -c` does (its messages asked for Ctrl+O: a new-user run)."""
    cid = stored_chat(store)
    asked: list[str | None] = []

    def factory(model, store_, progress):
        asked.append(model)
        if model != "some-model":
            return failing_factory(model, store_, progress)
        return ChatSession(FakeEngine(), store_, model_label="some-model")

    app = QwenchatApp(factory, theme="qwenchat-dark", persist_theme=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.load_error is not None)
        await pilot.click(list(app.query(ConversationItem))[0])
        await ready(pilot)
        assert asked == [None, "some-model"] and any("the model this chat used" in n for n in notes(app))
        assert app.session.conversation_id == cid and len(app.chat.chatlog.views) == 2
        await send(pilot, "and now?")
    assert [m.content for m in store.thread(cid)][-2:] == ["and now?", "Hello from the fake model."]


def slow_loading_app(gate: threading.Event, **kwargs) -> QwenchatApp:
    """An app whose model is loaded once `gate` is set."""
    def slow_factory(model, store_, progress):
        gate.wait(10)
        return ChatSession(FakeEngine(), store_, model_label="fake-model")

    return QwenchatApp(slow_factory, theme="qwenchat-dark", persist_theme=False, **kwargs)


async def test_continue_shows_the_stored_chat_while_the_model_loads(store):
    cid = stored_chat(store)
    gate = threading.Event()
    app = slow_loading_app(gate, continue_last=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.chat.chatlog.views) == 2)
        assert app.session is None  # still loading, already readable
        gate.set()
        await ready(pilot)
        assert app.session.conversation_id == cid
        await send(pilot, "and now?")
        assert [m.content for m in store.thread(cid)][-2:] == ["and now?", "Hello from the fake model."]


async def test_a_chat_shown_while_the_model_loads_has_its_branch_markers(store):
    """`qwenchat -c`: the `< 2/2 >` of a regenerated reply appeared only once the model was loaded."""
    conv = store.create_conversation("some-model")
    user = store.add_message(conv.id, "user", "q")
    store.add_message(conv.id, "assistant", "first", parent_id=user.id)
    store.add_message(conv.id, "assistant", "second", parent_id=user.id)  # a regeneration
    gate = threading.Event()
    app = slow_loading_app(gate, continue_last=True)
    async with app.run_test(size=SIZE) as pilot:
        try:
            await wait_for(pilot, lambda: len(app.chat.chatlog.views) == 2)
            assert app.session is None and app.chat.chatlog.views[1].branch == (2, 2)
        finally:
            gate.set()
        await ready(pilot)
        assert app.chat.chatlog.views[1].branch == (2, 2)


async def test_a_failed_load_says_so_on_every_send():
    app = QwenchatApp(failing_factory, theme="qwenchat-dark", persist_theme=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.load_error is not None)
        app.clear_notifications()
        for attempt in range(2):
            app.chat.input.text = "hello?"
            await pilot.press("enter")
            await pilot.pause()
            said = notes(app)
            assert len(said) == attempt + 1
            assert "failed" in said[-1] and "qwenchat pull nope" in said[-1]
            assert not any("still loading" in n for n in said)
            assert app.chat.input.text == "hello?"


async def test_a_model_picked_after_a_failed_load_shows_loading_in_the_status_bar():
    """Ctrl+O after a failed start: the panel said 'Loading ...' while the status bar still said
    'no model loaded' (a new-user run)."""
    gate = threading.Event()

    def factory(model, store_, progress):
        if model is None:
            return failing_factory(model, store_, progress)
        gate.wait(10)
        return ChatSession(FakeEngine(), store_, model_label="picked")

    app = QwenchatApp(factory, theme="qwenchat-dark", persist_theme=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.load_error is not None)
        assert "no model loaded" in status_text(app)
        app.begin_loading("picked")  # what Ctrl+O does with the model picked
        await pilot.pause()
        assert status_text(app) == "picked │ loading…"
        gate.set()
        await ready(pilot)
        assert status_text(app).startswith("picked")


async def test_a_refused_message_leaves_no_bubble_and_comes_back_to_the_box(store):
    app, factory = make_app(info=FakeInfo(context_window=64), script=["fine"])
    long = " ".join(["word"] * 80)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "short")
        await send(pilot, long)
        await wait_for(pilot, lambda: app.chat.input.text == long)
        assert texts(app) == [("user", "short", "complete"), ("assistant", "fine", "complete")]
        assert any("context window" in n for n in notes(app))
    assert [m.content for m in store.thread(factory.made[0].conversation_id)] == ["short", "fine"]


async def test_greedy_regenerate_says_so_once():
    app, _ = make_app(script=["same", "same", "same"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.session.set_options(GenerateOptions(temperature=0.0))
        await send(pilot, "q")
        for _ in range(2):
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not app.chat.generating)
        greedy = [n for n in notes(app) if "Greedy" in n]
        assert len(greedy) == 1 and "Ctrl+S" in greedy[0]


async def test_regenerate_with_a_fixed_seed_says_so_once():
    app, _ = make_app(script=["same", "same", "same"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.session.set_options(GenerateOptions(temperature=0.8, seed=5))
        await send(pilot, "q")
        for _ in range(2):
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not app.chat.generating)
        seeded = [n for n in notes(app) if "fixed seed" in n]
        assert len(seeded) == 1 and not any("Greedy" in n for n in notes(app))


async def test_a_cut_reply_is_marked_and_continues_in_place(store):
    app, factory = make_app(max_new_tokens=3, script=["one two three four", "five six"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        view = app.chat.chatlog.views[-1]
        status = str(view.query_one(".status").render())
        assert "cut at 3 tokens" in status and "F5" in status
        assert app.chat.session.sync() is False  # what this window wrote is what it shows
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Continue the reply" in titles
        await pilot.press("f5")
        await wait_for(pilot, lambda: not app.chat.generating and "five" in view.text)
        assert app.chat.chatlog.views[-1] is view and view.text == "one two three five six"
        assert "cut" not in str(view.query_one(".status").render())
        assert app.chat.session.sync() is False
    thread = store.thread(factory.made[0].conversation_id)
    assert [(m.role, m.content) for m in thread] == [("user", "count"), ("assistant", "one two three five six")]


async def test_a_cut_reply_keeps_its_mark_after_switching_versions(store):
    """A new-user run: after Alt+Left/Right the version shown lost its '✂ cut at N tokens' line
    (reopening the chat brought it back)."""
    app, _ = make_app(max_new_tokens=3, script=["one two three four", "five six seven eight"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.generating and "five" in app.chat.chatlog.views[-1].text)

        def mark() -> str:
            return str(app.chat.chatlog.views[-1].query_one(".status").render())

        assert "cut at 3 tokens" in mark()
        app.chat.chatlog.views[-1].focus()
        await pilot.press("alt+left")
        await wait_for(pilot, lambda: "one" in app.chat.chatlog.views[-1].text)
        assert "cut at 3 tokens" in mark() and "F5" in mark()


async def test_a_continued_reply_hides_its_old_figures_while_it_goes_on(store):
    """F5: the reply's details line said '3 tokens · ...' of the first part all through the
    continuation (a new-user run); it is hidden until the reply ends, then says the new figures."""
    hold = threading.Event()
    hold.set()
    app, factory = make_app(max_new_tokens=3, script=["one two three four", "five six"], hold=hold)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        view = app.chat.chatlog.views[-1]
        details = view.query_one(".details")
        assert details.display and "3 tokens" in str(details.render())
        hold.clear()
        try:
            await pilot.press("f5")
            await wait_for(pilot, lambda: "five" in view.text)  # paused after its first token
            assert not details.display
        finally:
            hold.set()
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.pause()
        assert details.display and "5 tokens" in str(details.render())


async def test_status_bar_meter_on_open_live_count_precision_and_no_rate_for_one_token(store):
    hold = threading.Event()
    app, factory = make_app(script=["ok", "alpha beta gamma delta"], hold=hold)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        hold.set()
        await send(pilot, "one word please")
        status = status_text(app)
        assert "cpu/int8" in status and "1 tok" in status and "tok/s" not in status
        cid = app.session.conversation_id
        await pilot.press("ctrl+n")
        await app.chat.open_conversation(cid)
        used = app.session.context_used()
        assert used > 0 and f"ctx {used}/4096" in status_text(app)
        hold.clear()
        app.chat.input.text = "more"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "1 tok" in status_text(app) and "generating" in status_text(app))
        hold.set()
        await wait_for(pilot, lambda: not app.chat.generating)
        assert "4 tok" in status_text(app) and "42.0 tok/s" in status_text(app)


async def test_a_chat_changed_in_another_window_is_shown_before_sending(store):
    app, factory = make_app(script=["r1", "r3"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        cid = app.session.conversation_id
        other = ChatSession(FakeEngine(script=["r2"]), store, model_label="fake-model")  # `ask --cid`
        other.load(cid)
        list(other.send("from elsewhere"))
        await send(pilot, "next")
        assert [t[1] for t in texts(app)] == ["hi", "r1", "from elsewhere", "r2", "next", "r3"]
        assert any("2 new messages from another window" in n for n in notes(app))
        seen = factory.made[0].engine.prompts[-1]
        assert [m["content"] for m in seen] == ["hi", "r1", "from elsewhere", "r2", "next"]


async def test_the_status_bar_drops_this_windows_figures_when_another_window_answers(store):
    """It kept 'ctx N ... 3 tok' of this window's last reply after following another window's
    exchange (a second new-user run): the meter now counts the chat as it stands."""
    app, _ = make_app(script=["one two three"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        assert "TTFT" in status_text(app) and "3 tok" in status_text(app)
        other = ChatSession(FakeEngine(script=["a longer reply from elsewhere"]), store, model_label="fake-model")
        other.load(app.session.conversation_id)
        list(other.send("from elsewhere"))
        await wait_for(pilot, lambda: len(texts(app)) == 4)  # followed
        await pilot.pause()
        assert "TTFT" not in status_text(app) and "3 tok" not in status_text(app)
        assert f"ctx {app.session.context_used()}/" in status_text(app)


@pytest.fixture
def quick_looks(monkeypatch):
    """A message waiting for another window looks again every 50 ms."""
    from qwenchat import other_window

    monkeypatch.setattr(other_window, "POLL_S", 0.05)


async def test_a_message_waits_while_another_window_answers_at_the_end_of_the_chat(store, quick_looks, other_process):
    """Sent at once, its reply would have followed a reply still being written (or a question with
    none yet): it waits in the box and goes once that reply has ended."""
    app, _ = make_app(script=["r1", "r2"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        cid = app.session.conversation_id
        asked = store.add_message(cid, "user", "asked elsewhere")
        pending = store.add_message(cid, "assistant", "so far", parent_id=asked.id, status="pending",
                                    meta={"pid": other_process})
        app.chat.input.text = "mine"
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("yours is sent once it has ended" in n for n in notes(app)))
        await pilot.pause(0.3)
        assert app.chat.input.text == "mine" and not app.chat.generating
        assert "waits for another window" in status_text(app)
        assert [m.content for m in store.thread(cid)][-1] == "so far"  # nothing of ours stored yet
        store.save_partial(pending.id, "so far, and more")
        await wait_for(pilot, lambda: texts(app)[-1][1] == "so far, and more")  # shown as it grows
        store.finish_message(pending.id, content="so far, done")
        await wait_for(pilot, lambda: [m.content for m in store.thread(cid)][-2:] == ["mine", "r2"])
        await wait_for(pilot, lambda: not app.chat.generating)
        assert [t[1] for t in texts(app)] == ["hi", "r1", "asked elsewhere", "so far, done", "mine", "r2"]
        assert "waits" not in status_text(app)
        assert app.chat.input.text == ""


async def test_a_reply_continued_in_another_window_is_followed_and_sent_on(store, quick_looks, other_process):
    """F5 in one window on a stopped reply: the other, waiting to send, kept showing the old text
    (the view was not "pending", so it never grew) and then sent its message with the old reply
    in the model's prompt (a second new-user run)."""
    app, factory = make_app(script=["r1", "r2"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        cid = app.session.conversation_id
        cut = store.thread(cid)[-1]
        store.finish_message(cut.id, content="r1", status="interrupted")
        await wait_for(pilot, lambda: texts(app)[-1] == ("assistant", "r1", "interrupted"))
        store.reopen_message(cut.id, meta={"pid": other_process})  # the other window's F5
        store.save_partial(cut.id, "r1 and more")
        app.chat.input.text = "mine"
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("yours is sent once it has ended" in n for n in notes(app)))
        await wait_for(pilot, lambda: texts(app)[-1][1] == "r1 and more")  # followed
        store.save_partial(cut.id, "r1 and more and more")
        await wait_for(pilot, lambda: texts(app)[-1][1] == "r1 and more and more")
        store.finish_message(cut.id, content="r1 and more and the end")
        await wait_for(pilot, lambda: [m.content for m in store.thread(cid)][-2:] == ["mine", "r2"])
        await wait_for(pilot, lambda: not app.chat.generating)
        seen = factory.made[0].engine.prompts[-1]
        assert [m["content"] for m in seen] == ["hi", "r1 and more and the end", "mine"]


async def test_esc_or_a_changed_text_ends_the_wait_and_keeps_the_message(store, quick_looks, other_process):
    app, _ = make_app(script=["r1", "r2"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        cid = app.session.conversation_id
        pending = store.add_message(cid, "assistant", "so far", status="pending", meta={"pid": other_process})
        app.chat.input.text = "mine"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.waiting)
        await pilot.press("escape")
        await wait_for(pilot, lambda: any("Not waiting" in n for n in notes(app)))
        assert not app.chat.waiting
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.waiting)
        app.chat.input.text = "mine, edited"
        await wait_for(pilot, lambda: any("The message changed while it waited" in n for n in notes(app)))
        store.finish_message(pending.id, content="so far, done")
        await pilot.pause(0.3)
        assert app.chat.input.text == "mine, edited" and not app.chat.waiting
        assert [m.content for m in store.thread(cid)][-1] == "so far, done"  # ours was not sent


async def test_a_message_another_window_beats_by_a_moment_follows_its_turn(store, quick_looks, other_process):
    """Both windows found the chat free; the other stored its message first (between this one's
    reading the chat and storing): the store refuses this one, and it waits and follows."""
    from qwenchat.session import ANSWERING

    app, factory = make_app(script=["r1"], default="mine answered")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        cid = app.session.conversation_id
        engine = factory.made[0].engine
        real_chat, raced = engine.chat, []

        def chat(*args, **kwargs):  # runs after the app read the chat, before it stores "mine"
            if not raced:
                raced.append(store.add_message(cid, "user", "theirs", meta={ANSWERING: other_process}))
            return real_chat(*args, **kwargs)

        engine.chat = chat
        app.chat.input.text = "mine"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.waiting)
        assert [m.content for m in store.thread(cid)][-1] == "theirs"
        store.add_message(cid, "assistant", "their reply")
        store.merge_meta(raced[0].id, {ANSWERING: None})
        await wait_for(pilot, lambda: [m.content for m in store.thread(cid)][-2:] == ["mine", "mine answered"])
        assert store.get_conversation(cid).message_count == 6  # one branch


@pytest.mark.parametrize(("key", "verb"), [("ctrl+r", "regenerated"), ("f5", "continued"), ("ctrl+g", "edited")])
async def test_acting_on_a_chat_another_window_changed_shows_it_first_and_does_nothing(store, key, verb, monkeypatch):
    """Found hands-on: after `ask -c` added a turn, Ctrl+R regenerated the other window's reply
    while the screen showed the new text under the old question, with the old reply's numbers.
    (An idle chat follows other windows every second; here the key comes before it looks.)"""
    from qwenchat.tui.screens import other_windows

    monkeypatch.setattr(other_windows, "FOLLOW_S", 3600.0)
    app, factory = make_app(script=["r1 cut"], max_new_tokens=2, default="again")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        cid = app.session.conversation_id
        other = ChatSession(FakeEngine(script=["their reply"]), store, model_label="fake-model")  # `ask -c`
        other.load(cid)
        list(other.send("from elsewhere"))
        await pilot.press(key)
        await wait_for(pilot, lambda: any(f"Nothing was {verb}" in n for n in notes(app)))
        await pilot.pause(0.2)
        assert not app.chat.generating and len(factory.made[0].engine.prompts) == 1  # nothing asked of the model
        assert [t[1] for t in texts(app)] == ["hi", "r1 cut", "from elsewhere", "their reply"]
        assert [m.content for m in store.thread(cid)] == ["hi", "r1 cut", "from elsewhere", "their reply"]
        assert store.get_conversation(cid).message_count == 4


async def test_an_idle_chat_shows_what_another_window_writes_as_it_is_written(store, other_process, fast_follow):
    app, _ = make_app(script=["r1"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        cid = app.session.conversation_id
        asked = store.add_message(cid, "user", "from elsewhere")
        await wait_for(pilot, lambda: [t[1] for t in texts(app)] == ["hi", "r1", "from elsewhere"])
        assert any("1 new message from another window" in n for n in notes(app))
        reply = store.add_message(cid, "assistant", "so", parent_id=asked.id, status="pending",
                                  meta={"pid": other_process})
        # [-1:]: the log is empty for a moment while it is drawn again
        await wait_for(pilot, lambda: texts(app)[-1:] == [("assistant", "so", "pending")])
        shown = app.chat.chatlog.views[-1]
        store.save_partial(reply.id, "so far")
        await wait_for(pilot, lambda: [t[1] for t in texts(app)[-1:]] == ["so far"])
        assert app.chat.chatlog.views[-1] is shown  # grown in place, not drawn again
        store.finish_message(reply.id, content="so far, done")
        await wait_for(pilot, lambda: texts(app)[-1:] == [("assistant", "so far, done", "complete")])
        app.chat.chatlog.views[0].focus()  # the user is doing something there: left alone
        store.add_message(cid, "user", "later")
        await pilot.pause(0.3)
        assert [t[1] for t in texts(app)][-1] == "so far, done"


async def test_an_idle_chat_shows_a_system_prompt_another_window_set(store, fast_follow):
    app, _ = make_app(script=["r1"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        store.update_conversation(app.session.conversation_id, system_prompt="be brief")  # `ask --cid N -s`
        await wait_for(pilot, lambda: app.chat.chatlog.system_prompt_view is not None)
        assert app.chat.chatlog.system_prompt_view.text == "be brief" and app.is_running
        assert [t[1] for t in texts(app)] == ["hi", "r1"]


async def test_user_text_that_looks_like_markup_is_shown_as_written(store):
    store.save_preset("[/]", "You talk like a pirate.")
    cid = stored_chat(store, title="[/] broken [red]title")
    app, _ = make_app(app_kwargs={"model": "odd[b]model"})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "odd[b]model" in status_text(app)
        app.chat.action_new_chat_with_preset()
        await wait_for(pilot, lambda: isinstance(app.screen, PickScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("[/]" in n for n in notes(app)))
        await app.chat.open_conversation(cid)
        app.chat.sidebar.list_view.focus()
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen")
        await pilot.click("#yes")
        await wait_for(pilot, lambda: any("Deleted “[/] broken [red]title”" in n for n in notes(app)))
        await pilot.pause(0.2)  # the toasts render
        assert app.is_running


async def test_what_the_model_load_had_to_say_is_shown(store):
    note = "the int8 cache of [m] was damaged: rebuilt from the model's weights"
    app, _ = make_app(info=FakeInfo(notes=(note,)))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.pause()
        assert f"Model: {note}" in notes(app)  # shown as written (no markup eaten)


async def test_a_model_ready_while_the_app_closes_is_ignored(store):
    """The load can end just as the user quits: its message then arrives while the screens are
    being taken down, and showing the chat would end in a MountError traceback."""
    from qwenchat.tui import messages as msg

    stored_chat(store)
    gate = threading.Event()

    def never(model, store_, progress):
        gate.wait(30)
        raise RuntimeError("not used")

    app = QwenchatApp(never, continue_last=True, theme="qwenchat-dark", persist_theme=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.chat.chatlog.views) == 2)
        session = ChatSession(FakeEngine(), app.store, model_label="fake-model")
        app.exit()
        app.post_message(msg.SessionReady(session, None, app._load_seq))
        await pilot.pause(0.3)
    gate.set()
    assert app._exception is None


async def test_markup_typed_into_dialogs_is_shown_as_written(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_settings(pilot)
        screen.query_one("#top_p", Input).value = "[/]"
        await pilot.pause(0.2)
        assert screen.query_one("#top_p", Input).has_class("-invalid") and app.is_running
        await close_settings(pilot)
        store.save_preset("x", "text")
        from qwenchat.tui.screens.dialogs import TextPrompt

        await open_system_prompt(pilot)
        app.screen.query_one("#prompt").text = "Be brief."
        app.screen.save()
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one(Input).value = "[/]odd[b]"
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("[/]odd[b]" in n for n in notes(app)))
        await pilot.pause(0.2)
        assert app.is_running


async def test_a_message_sent_while_the_model_loads_goes_once_it_is_ready(store):
    loaded = threading.Event()
    app, factory = make_app(script=["hello there"])
    inner = app.session_factory

    def slow(model, store_, progress):
        loaded.wait(10)
        return inner(model, store_, progress)

    app.session_factory = slow
    async with app.run_test(size=SIZE) as pilot:
        app.chat.input.text = "first line\nsecond line"
        await pilot.press("enter")
        await pilot.pause()
        assert app.chat.input.text == "first line\nsecond line" and texts(app) == []  # waits in the box
        assert any("will be sent when it is ready" in n for n in notes(app))
        loaded.set()
        await wait_for(pilot, lambda: len(texts(app)) == 2 and not app.chat.generating)
        assert texts(app) == [("user", "first line\nsecond line", "complete"), ("assistant", "hello there", "complete")]
        assert app.chat.input.text == ""
