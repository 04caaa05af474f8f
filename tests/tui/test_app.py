"""Pilot tests of the chat app: the real ChatSession over a scripted FakeEngine, a real store."""

from __future__ import annotations

import threading

from textual.widgets import Input, Label, TextArea

from qwenchat.config import read_file
from qwenchat.engine.errors import SettingsError
from qwenchat.tui.app import QwenchatApp
from qwenchat.tui.screens.dialogs import ConfirmScreen, EditMessageScreen, PickScreen, TextPrompt
from qwenchat.tui.screens.help import HelpScreen, key_label
from qwenchat.tui.screens.settings import SettingsScreen
from qwenchat.tui.widgets.sidebar import ConversationItem
from tests.tui.conftest import wait_for
from tests.fake_engine import FakeInfo, engine_factory
from tests.tui.helpers import notes, open_rename, open_system_prompt, status_text

SIZE = (110, 34)


def make_app(**kwargs):
    factory = engine_factory(**kwargs)
    return QwenchatApp(factory, theme="qwenchat-dark", persist_theme=False), factory


async def ready(pilot):
    await wait_for(pilot, lambda: pilot.app.session is not None)


async def send(pilot, text: str):
    app = pilot.app
    app.chat.input.text = text
    app.chat.input.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not app.chat.generating)


def texts(app):
    return [(v.role, v.text, v.status) for v in app.chat.chatlog.views]


async def test_send_streams_reply_and_persists(store):
    app, factory = make_app(script=["Hi **there**, how can I help?"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        assert texts(app) == [("user", "hello", "complete"),
                              ("assistant", "Hi **there**, how can I help?", "complete")]
        assert app.chat.input.text == ""
        status = str(app.query_one("#status").render())
        usage = app.chat.last_reply.usage
        assert "fake-model" in status and f"cached {usage.cached_tokens}" in status and "42.0 tok/s" in status
        assert f"ctx {app.session.context_used()}/4096" in status and "TTFT 0.25s" in status
        assert "cpu/int8" in status  # the weights' precision, not the activations' dtype
        items = list(app.query(ConversationItem))
        assert [i.conversation_id for i in items] == [app.session.conversation_id]
    thread = store.thread(factory.made[0].conversation_id)
    assert [(m.role, m.content) for m in thread] == [("user", "hello"), ("assistant", "Hi **there**, how can I help?")]


async def test_ctrl_j_inserts_newline_and_typing_while_streaming(store):
    hold = threading.Event()
    app, _ = make_app(hold=hold, default="one two three")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.focus()
        await pilot.press("a", "ctrl+j", "b")
        assert app.chat.input.text == "a\nb"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.generating and app.chat.chatlog.views[-1].text == "one")
        await pilot.press("x", "y")  # typing while the reply streams
        assert app.chat.input.text == "xy"
        await pilot.press("enter")  # refused while busy: the text stays
        assert app.chat.input.text == "xy"
        hold.set()
        await wait_for(pilot, lambda: not app.chat.generating)
        assert app.chat.chatlog.views[-1].text == "one two three"
        assert app.chat.chatlog.views[0].text == "a\nb"


async def test_stop_mid_reply_keeps_partial_marked_interrupted(store):
    hold = threading.Event()
    app, factory = make_app(hold=hold, default="partial answer that never ends")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.text = "go"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.chatlog.views[-1].text == "partial")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)
        assert texts(app)[-1] == ("assistant", "partial", "interrupted")
        assert "interrupted" in str(app.chat.chatlog.views[-1].query_one(".status").render())
        assert app.chat.session.sync() is False  # its own stopped reply is not another window's change
    thread = store.thread(factory.made[0].conversation_id)
    assert (thread[-1].content, thread[-1].status) == ("partial", "interrupted")


async def test_regenerate_replaces_last_reply(store):
    app, factory = make_app(script=["first answer", "second answer"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "question")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.chatlog.views[-1].text == "second answer")
        assert [t[1] for t in texts(app)] == ["question", "second answer"]
        assert factory.made[0].engine.prompts[-1] == [{"role": "user", "content": "question"}]
        assert app.chat.session.sync() is False
    thread = store.thread(factory.made[0].conversation_id)
    assert [m.content for m in thread] == ["question", "second answer"]
    assert len(store.siblings(thread[-1].id)) == 2  # the old reply stays in the tree


async def test_edit_and_resend(store):
    app, factory = make_app(script=["a1", "a2", "a3"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        await send(pilot, "second")
        first = app.chat.chatlog.views[0]
        first.focus()
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, EditMessageScreen))
        app.screen.query_one(TextArea).text = "  "
        await pilot.press("ctrl+s")  # empty: said, and the dialog stays
        await wait_for(pilot, lambda: any("empty message cannot be sent" in n for n in notes(app)))
        assert isinstance(app.screen, EditMessageScreen)
        app.screen.query_one(TextArea).text = "first, edited"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.chatlog.views[-1].text == "a3")
        assert [t[1] for t in texts(app)] == ["first, edited", "a3"]
    thread = store.thread(factory.made[0].conversation_id)
    assert [m.content for m in thread] == ["first, edited", "a3"]


async def test_switch_conversations_and_continue(store):
    app, factory = make_app(script=["r1", "r2", "r3"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "chat one")
        first_id = app.session.conversation_id
        await pilot.press("ctrl+n")
        assert app.chat.chatlog.views == []
        await send(pilot, "chat two")
        second_id = app.session.conversation_id
        assert first_id != second_id
        items = list(app.query(ConversationItem))
        assert [i.conversation_id for i in items] == [second_id, first_id]  # newest first
        await pilot.click(items[1])
        await wait_for(pilot, lambda: app.session.conversation_id == first_id)
        assert [t[1] for t in texts(app)] == ["chat one", "r1"]
        await send(pilot, "more")
        assert [m.content for m in store.thread(first_id)] == ["chat one", "r1", "more", "r3"]
        # search narrows the list
        app.query_one("#search", Input).value = "two"
        await wait_for(pilot, lambda: [i.conversation_id for i in app.query(ConversationItem)] == [second_id])


async def test_rename_and_delete_with_confirmation(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        cid = await open_rename(pilot)
        app.screen.query_one(Input).value = "  "
        await pilot.press("enter")  # nothing to rename it to: said, and the dialog stays
        await wait_for(pilot, lambda: any("Nothing typed" in n for n in notes(app)))
        assert isinstance(app.screen, TextPrompt)
        app.screen.query_one(Input).value = "My chat"
        await pilot.press("enter")
        await wait_for(pilot, lambda: store.get_conversation(cid).title == "My chat")
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")  # cancelled: nothing deleted
        assert store.get_conversation(cid)
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "tok/s" in status_text(app)  # the reply's figures
        await pilot.click("#yes")
        await wait_for(pilot, lambda: store.list_conversations() == [])
        assert app.session.conversation_id is None and app.chat.chatlog.views == []
        assert "tok/s" not in status_text(app)  # the deleted chat's figures stayed on
        await pilot.press("f3")  # a chat not saved yet: F3 said nothing at all
        await wait_for(pilot, lambda: any("Nothing to delete" in n for n in notes(app)))


async def test_new_chat_with_preset(store):
    store.save_preset("pirate", "You talk like a pirate.")
    app, factory = make_app(script=["Arr"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.action_new_chat_with_preset()
        await wait_for(pilot, lambda: isinstance(app.screen, PickScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.session.system_prompt == "You talk like a pirate.")
        await send(pilot, "hi")
        assert factory.made[0].engine.prompts[-1][0] == {"role": "system", "content": "You talk like a pirate."}
    assert store.get_conversation(factory.made[0].conversation_id).system_prompt == "You talk like a pirate."


async def test_system_prompt_editor_and_presets(store):
    app, factory = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await open_system_prompt(pilot)
        screen = app.screen
        screen.query_one("#prompt", TextArea).text = "Be brief."
        screen.save()
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one(Input).value = "brief"
        await pilot.press("enter")
        await wait_for(pilot, lambda: [p.name for p in store.list_presets()] == ["brief"])
        screen.rename()
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one(Input).value = "short"
        await pilot.press("enter")
        await wait_for(pilot, lambda: [p.name for p in store.list_presets()] == ["short"])
        await pilot.press("ctrl+s")  # apply
        await wait_for(pilot, lambda: app.session.system_prompt == "Be brief.")
    assert store.get_conversation(factory.made[0].conversation_id).system_prompt == "Be brief."
    assert store.get_preset("short").text == "Be brief."


async def test_sampling_settings_saved_and_bad_value_rejected(store):
    app, factory = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        screen = app.screen
        assert screen.query_one("#temperature", Input).placeholder == "default: 0.7"
        screen.query_one("#top_p", Input).value = "1.5"
        await pilot.pause()
        assert screen.query_one("#top_p", Input).has_class("-invalid")
        assert "greater than 0 and at most 1" in str(screen.query_one("#top_p-error").render())
        screen.query_one("#max_new_tokens", Input).value = "many"
        await pilot.pause()
        said = str(screen.query_one("#max_new_tokens-error").render())
        assert "Max tokens must be a whole number" in said and "max_tokens" not in said  # as labelled
        screen.query_one("#max_new_tokens", Input).value = ""
        await pilot.press("ctrl+s")  # refused: still open, nothing reached the session
        assert app.screen is screen and app.session.options.top_p is None
        screen.query_one("#top_p", Input).value = "0.9"
        screen.query_one("#temperature", Input).value = "0.2"
        screen.query_one("#seed", Input).value = "7"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        opts = app.session.options
        assert (opts.temperature, opts.top_p, opts.seed) == (0.2, 0.9, 7)
    settings = store.get_conversation(factory.made[0].conversation_id).settings
    assert settings == {"temperature": 0.2, "top_p": 0.9, "seed": 7}


async def test_engine_refusal_is_shown_and_app_keeps_running(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#temperature", Input).value = "500"  # the dialog's own check
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen) and app.session.options.temperature is None

        def refuse(options):
            raise SettingsError("temperature 1.5 is refused by this engine", "use a value from 0 to 1")

        app.session.set_options = refuse  # a value the dialog accepts but the engine does not
        app.screen.query_one("#temperature", Input).value = "1.5"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.session.options.temperature is None
        assert any("refused" in n.message and "0 to 1" in n.message for n in app._notifications)
        await send(pilot, "still alive")
        assert app.chat.chatlog.views[-1].text == "Hello from the fake model."


async def test_theme_change_persists_in_config():
    app = QwenchatApp(engine_factory(), persist_theme=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "qwenchat-dark"
        assert {"qwenchat-light", "qwenchat-high-contrast"} <= set(app.available_themes)
        app.theme = "qwenchat-light"
        await pilot.pause()
    assert read_file()["theme"] == "qwenchat-light"
    app2 = QwenchatApp(engine_factory())
    async with app2.run_test(size=SIZE) as pilot:
        assert app2.theme == "qwenchat-light"


async def test_an_unknown_configured_theme_is_stood_in_for_not_overwritten():
    """The stand-in theme was saved over the user's "nrod" (a typo, or a theme file not copied yet)
    within seconds of starting (found hands-on); a theme the user then picks is saved."""
    from qwenchat.paths import config_file

    config_file().parent.mkdir(parents=True, exist_ok=True)
    config_file().write_text('theme = "nrod"\n')
    app = QwenchatApp(engine_factory(), persist_theme=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.theme == "qwenchat-dark"
        assert any("unknown theme 'nrod'" in n.message for n in app._notifications)
        await pilot.pause(0.3)
        assert read_file()["theme"] == "nrod"
        app.theme = "nord"
        await pilot.pause()
    assert read_file()["theme"] == "nord"


async def test_help_lists_every_binding_and_palette_has_every_action():
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = [(str(r.query_one(".key", Label).render()), str(r.query_one(".what", Label).render()))
                for r in app.screen.query(".row")]
        for b in app.all_bindings():
            assert (key_label(b.key), b.description) in rows
        assert ("Ctrl+Q", "Quit") in rows and ("Alt+←", "Previous branch") in rows
        await pilot.press("escape")
        commands = list(app.get_system_commands(app.screen))
        titles = {c.title for c in commands}
        assert ("New chat", "Ctrl+N") in {(c.title, c.help) for c in commands}  # keys spelt as help spells them
        for b in app.all_bindings():
            if b.action not in ("quit", "stop"):
                assert b.description in titles
        assert "Stop reply" not in titles  # no reply streams: it would do nothing, silently
        assert not {"Keys", "Maximize", "Screenshot"} & titles  # Textual's, about widgets
        assert {"Theme", "Quit", "Clear the screen: a new, empty chat", "New chat with preset"} <= titles


async def test_the_preset_buttons_act_without_an_arrow_key_first(store):
    """Tab to 'Use' and Enter did nothing until a preset had been highlighted with the arrow keys
    (a new-user run); with no preset at all, the buttons say why they do nothing."""
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_system_prompt(pilot)
        await pilot.click("#use")
        await wait_for(pilot, lambda: any("No presets yet" in n for n in notes(app)))
        await pilot.press("escape")
        store.save_preset("pirate", "You talk like a pirate.")
        dialog = await open_system_prompt(pilot)
        await pilot.click("#use")
        await wait_for(pilot, lambda: dialog.query_one("#prompt", TextArea).text == "You talk like a pirate.")


async def test_save_as_an_existing_preset_asks_before_replacing_its_text(store):
    """F4's "Save as…" with a preset's name replaced its text silently, saying "Saved preset"
    (a new-user run)."""
    from qwenchat.tui.screens.dialogs import ConfirmScreen, TextPrompt

    store.save_preset("pirate", "You talk like a pirate.")
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        for answer in ("escape", "enter"):  # keep it, then replace it
            dialog = await open_system_prompt(pilot)
            dialog.query_one("#prompt", TextArea).text = "Be terse."
            await pilot.click("#save")
            await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
            app.screen.query_one(Input).value = "pirate"
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            if answer == "enter":
                app.screen.query_one("#yes").focus()
            await pilot.press(answer)
            await wait_for(pilot, lambda: app.screen is dialog)
            kept = store.get_preset("pirate").text
            assert kept == ("You talk like a pirate." if answer == "escape" else "Be terse.")
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.chat)
        assert any("Replaced preset 'pirate'" in n for n in notes(app))


async def test_the_palette_opens_on_the_chat_not_over_a_dialog(store):
    """F4, then Ctrl+P's "New chat with preset", then Ctrl+S in the F4 dialog left underneath:
    the preset's new chat lost its system prompt (a new-user run)."""
    from textual.command import CommandPalette

    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_system_prompt(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.screen is dialog and any("Close this dialog first" in n for n in notes(app))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.chat)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))


async def test_copy_reply_and_code_block(store):
    app, _ = make_app(script=["Try:\n```python\nprint('hi')\n```\ndone"])
    copied: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.copy_to_clipboard = copied.append  # OSC 52 has no terminal here
        await ready(pilot)
        await send(pilot, "code please")
        await pilot.press("f9")
        await pilot.press("f8")
        assert copied == ["print('hi')", "Try:\n```python\nprint('hi')\n```\ndone"]


async def test_base_model_opens_in_completion_mode():
    app, _ = make_app(info=FakeInfo(chat_tuned=False, has_chat_template=False))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.session.raw is True
        note = app.query_one("#mode-note")
        assert note.display and "Completion mode" in str(note.render())


async def test_quit_while_streaming_saves_partial(store):
    hold = threading.Event()
    app, factory = make_app(hold=hold, default="half of it")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.text = "go"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.chatlog.views[-1].text == "half")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: not app.is_running)
    last = store.thread(factory.made[0].conversation_id)[-1]
    assert (last.content, last.status) == ("half", "interrupted")


async def test_load_failure_is_reported_and_app_keeps_running():
    from qwenchat.errors import HubError

    def factory(model, store, progress):
        raise HubError("model nope is not downloaded", "run `qwenchat pull nope` first")

    app = QwenchatApp(factory, theme="qwenchat-dark", persist_theme=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: any("nope" in n.message for n in app._notifications))
        note = next(n for n in app._notifications if "nope" in n.message)
        assert "qwenchat pull nope" in note.message
        assert app.is_running


async def test_switching_models_closes_the_session_left_behind(store):
    """A remote engine keeps a server's connections open: the session the app drops for another
    model is closed (and one superseded by a later pick before it was shown)."""
    from tests.tui.conftest import wait_for
    from tests.tui.helpers import SIZE, make_app, ready

    app, factory = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        first = app.session
        app.begin_loading("other-model")
        await wait_for(pilot, lambda: app.session is not first)
        assert first.engine.closed and not app.session.engine.closed
        app.begin_loading("third")
        app.begin_loading("fourth")  # supersedes "third" before it is shown
        await wait_for(pilot, lambda: app.session.model_label == "fourth")
        third = lambda: [s for s in factory.made if s.model_label == "third"]  # noqa: E731
        await wait_for(pilot, lambda: bool(third()) and third()[0].engine.closed)
        assert not app.session.engine.closed
