"""Pilot tests of the app's message features on the real ChatSession over a FakeEngine and a
real store: multi-line messages as typed, branches, export, attach, copying one code block,
the system prompt, the details line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input

from qwenchat.tui.app import QwenchatApp
from qwenchat.tui.screens.dialogs import ConfirmScreen, EditMessageScreen, TextPrompt
from qwenchat.tui.screens.message_features import CodeBlockPicker
from tests.fake_engine import engine_factory
from tests.tui.conftest import wait_for
from tests.tui.helpers import open_system_prompt
from tests.tui.screen_text import screen_lines, screen_text

SIZE = (110, 40)


def make_app(conversation_id: int | None = None, **kwargs):
    factory = engine_factory(**kwargs)
    app = QwenchatApp(factory, theme="qwenchat-dark", persist_theme=False, conversation_id=conversation_id)
    return app, factory


async def ready(pilot):
    await wait_for(pilot, lambda: pilot.app.session is not None)
    await pilot.pause()


async def send(pilot, text: str):
    chat = pilot.app.chat
    chat.input.text = text
    chat.input.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not chat.generating and chat.chatlog.views
                   and chat.chatlog.views[-1].status != "pending")
    await pilot.pause()


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def line_with(app, needle: str) -> str:
    return next(line for line in screen_lines(app) if needle in line)


async def prompt_answer(pilot, text: str | None = None):
    """Answer the TextPrompt on screen (keep its default when `text` is None)."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, TextPrompt))
    if text is not None:
        pilot.app.screen.query_one(Input).value = text
    await pilot.press("enter")
    await pilot.pause()


# -- item 2: a user's message as typed ------------------------------------------------------------

async def test_multiline_message_keeps_its_lines_on_screen(store):
    app, _ = make_app(script=["Noted."])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.focus()
        await pilot.press("a", "ctrl+j", "space", "space", "b", "ctrl+j", "[", "/", "]")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.pause()
        lines = screen_lines(app)
        row = next(i for i, line in enumerate(lines) if line.rstrip().endswith(" a"))
        col = lines[row].rindex("a")
        assert lines[row + 1][col:] == "  b" and lines[row + 2][col:] == "[/]"


# -- branches --------------------------------------------------------------------------------------

async def test_regenerated_reply_shows_branch_and_keys_switch_it_in_the_store(store):
    app, factory = make_app(script=["first answer", "second answer", "third answer"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "question")
        assert "< " not in screen_text(app)
        for _ in range(2):
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.pause()
        assert "< 3/3 >" in line_with(app, "Assistant")
        session = factory.made[0]
        cid = session.conversation_id
        app.chat.input.focus()
        await pilot.press("alt+left")  # from the input box: the last message with versions
        await pilot.pause()
        assert "< 2/3 >" in line_with(app, "Assistant") and "second answer" in screen_text(app)
        assert store.thread(cid)[-1].content == "second answer"  # the store's head moved
        await pilot.press("alt+left", "alt+left")  # the second press says it is the first
        await pilot.pause()
        assert "< 1/3 >" in line_with(app, "Assistant")
        assert any("first version" in n for n in notes(app))
        await app.chat.run_action("branch(1)")  # what the palette entry runs
        await pilot.pause()
        assert [m.content for m in store.thread(cid)] == ["question", "second answer"]
        assert [e.content for e in session.entries] == ["question", "second answer"]


async def test_edited_message_shows_its_versions_and_switching_brings_back_the_old_branch(store):
    app, factory = make_app(script=["about cats", "about dogs"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "tell me about cats")
        await app.chat.edit_message(0)
        await wait_for(pilot, lambda: isinstance(app.screen, EditMessageScreen))
        app.screen.dismiss("tell me about dogs")
        await wait_for(pilot, lambda: not app.chat.generating and len(factory.made[0].entries) == 2)
        await pilot.pause()
        assert "< 2/2 >" in line_with(app, "You")
        app.chat.chatlog.views[0].focus()
        await pilot.press("alt+left")
        await pilot.pause()
        assert "< 1/2 >" in line_with(app, "You") and "about cats" in screen_text(app)
        assert [m.content for m in store.thread(factory.made[0].conversation_id)] == ["tell me about cats", "about cats"]


async def test_clicking_the_branch_indicator_switches(store):
    app, factory = make_app(script=["first answer", "second answer"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "question")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.pause()
        switch = app.chat.chatlog.views[-1].query_one(".branch")
        await pilot.click(switch, offset=(0, 0))  # its left half: the previous version
        await wait_for(pilot, lambda: "< 1/2 >" in screen_text(app))
        assert store.thread(factory.made[0].conversation_id)[-1].content == "first answer"
        switch = app.chat.chatlog.views[-1].query_one(".branch")
        await pilot.click(switch, offset=(switch.size.width - 1, 0))
        await wait_for(pilot, lambda: "< 2/2 >" in screen_text(app))


async def test_branch_keys_without_versions_say_so(store):
    app, _ = make_app(script=["only"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "q")
        await pilot.press("alt+right")
        await pilot.pause()
        assert any("No message has other versions" in n for n in notes(app))


# -- export ----------------------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


async def test_export_markdown_and_json_from_the_palette(store, home):
    app, factory = make_app(script=["Line one\nline two"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Export me")
        cid = factory.made[0].conversation_id
        await app.chat.run_action("export('md')")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
        default = app.screen.query_one(Input).value
        assert default == str(home / f"qwenchat-{cid}-export-me.md")
        await prompt_answer(pilot)
        await wait_for(pilot, lambda: Path(default).exists())
        text = Path(default).read_text(encoding="utf-8")
        assert "Export me" in text and "Line one\nline two" in text
        await app.chat.run_action("export('json')")
        await prompt_answer(pilot)
        out = home / f"qwenchat-{cid}-export-me.json"
        await wait_for(pilot, lambda: out.exists())
        assert json.loads(out.read_text(encoding="utf-8"))["id"] == cid


async def test_export_write_error_is_shown_not_raised_and_existing_file_asks(store, home):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await app.chat.run_action("export('md')")
        await prompt_answer(pilot, str(home / "missing" / "dir" / "chat.md"))
        await wait_for(pilot, lambda: any("cannot write" in n for n in notes(app)))
        assert app.is_running
        # the path is asked again, as typed, to be fixed (it closed: found hands-on)
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
        assert app.screen.query_one(Input).value == str(home / "missing" / "dir" / "chat.md")
        (home / "keep.md").write_text("mine")
        await prompt_answer(pilot, str(home / "keep.md"))
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await pilot.pause()
        assert (home / "keep.md").read_text() == "mine"


async def test_export_before_the_first_message_says_why(store, home):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.chat.run_action("export('md')")
        await wait_for(pilot, lambda: any("Nothing to export" in n for n in notes(app)))


# -- attach ----------------------------------------------------------------------------------------

async def test_ctrl_t_attaches_a_file_as_a_fenced_block_and_it_is_sent(store, tmp_path):
    f = tmp_path / "hello.py"
    f.write_text("def hello():\n    print('hi')\n")
    app, factory = make_app(script=["It prints hi."])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.focus()
        await pilot.press("W", "h", "y", "?")
        await pilot.press("ctrl+t")
        await prompt_answer(pilot, str(f))
        assert app.chat.input.text == "Why?\n\n```hello.py\ndef hello():\n    print('hi')\n```\n"
        app.chat.input.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and len(factory.made[0].entries) == 2)
        sent = store.thread(factory.made[0].conversation_id)[0].content
        assert "```hello.py\ndef hello():\n    print('hi')\n```" in sent


async def typed_file_command(tmp_path, content: bytes, typed: str) -> tuple[str, list, list[str]]:
    """`typed` ("{f}": notes.txt holding `content`) and Enter: (the message box's text, what was
    sent, the notes shown)."""
    f = tmp_path / "notes.txt"
    f.write_bytes(content)
    app, factory = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.text = typed.format(f=f)
        app.chat.input.focus()
        await pilot.press("enter")
        await pilot.pause()
        return app.chat.input.text, factory.made[0].entries, notes(app)


async def test_file_command_expands_into_the_input_without_sending(store, tmp_path):
    box, sent, said = await typed_file_command(tmp_path, "caf\xe9\n".encode("latin-1"), "/file {f}\nWhat is this?")
    assert box == "What is this?\n\n```notes.txt\ncaf\xe9\n```\n"
    assert sent == []  # not sent
    assert any("Latin-1" in n for n in said)


async def test_file_command_with_the_message_on_the_same_line(store, tmp_path):
    """`/file PATH summarise this` on one line (a new-user run): the path, then the message."""
    box, sent, _ = await typed_file_command(tmp_path, b"notes\n", "/file {f} summarise this")
    assert box == "summarise this\n\n```notes.txt\nnotes\n```\n" and sent == []


async def test_a_sent_attachment_ends_at_its_fence(store, tmp_path):
    """The line left after the block for typing on was sent too: a blank line closed the message
    (a new-user run)."""
    f = tmp_path / "notes.txt"
    f.write_text("notes\n")
    app, factory = make_app(script=["ok"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.chat.input.text = f"/file {f} summarise this"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.input.text.endswith("```\n"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and len(app.chat.chatlog.views) == 2)
        assert app.chat.chatlog.views[0].text == "summarise this\n\n```notes.txt\nnotes\n```"
        assert app.chat.input.text == ""
    assert store.thread(factory.made[0].conversation_id)[0].content == "summarise this\n\n```notes.txt\nnotes\n```"


async def test_attach_refuses_binary_missing_and_too_large_files(store, tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\0\1\2" * 100)
    big = tmp_path / "big.txt"
    big.write_text("word " * 5000)  # ~25,000 characters: more than the fake's 4,096-token window
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for path, why in [(binary, "binary"), (tmp_path / "gone.txt", "no such file"), (big, "context window")]:
            app.chat.input.text = "keep this"
            await pilot.press("ctrl+t")
            await prompt_answer(pilot, str(path))
            await wait_for(pilot, lambda: any(why in n for n in notes(app)))
            assert app.chat.input.text == "keep this"
            # asked again, as typed: a path retyped after the dialog closed was sent as a message
            await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
            assert app.screen.query_one(Input).value == str(path)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.chat)
        app.chat.input.text = f"/file {binary}"
        app.chat.input.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert app.chat.input.text == f"/file {binary}"  # left for the user to fix


# -- copy one code block ---------------------------------------------------------------------------

REPLY_WITH_CODE = "Three ways:\n```python\nprint(1)\n```\n```sh\necho 2\n```\n```\nthree = [3]\n```"


async def test_copy_any_code_block_through_a_picker(store):
    app, _ = make_app(script=[REPLY_WITH_CODE.replace(" ", "\u00a0")])
    copied: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.copy_to_clipboard = copied.append  # OSC 52 has no terminal here
        await ready(pilot)
        await send(pilot, "code please")
        await pilot.press("f9")  # from the input: the last reply with code
        await wait_for(pilot, lambda: isinstance(app.screen, CodeBlockPicker))
        labels = [str(app.screen.blocks[i].label) for i in range(3)]
        assert labels[2].startswith("three\u00a0=\u00a0[3]")
        await pilot.press("down", "down", "enter")
        await wait_for(pilot, lambda: copied)
        assert copied == ["three\u00a0=\u00a0[3]"]
        app.chat.chatlog.views[0].focus()  # a focused message without code says so
        await pilot.press("f9")
        await wait_for(pilot, lambda: any("No code block to copy in this message" in n for n in notes(app)))


async def test_single_code_block_is_copied_at_once(store):
    app, _ = make_app(script=["```\nx\n```"])
    copied: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.copy_to_clipboard = copied.append
        await ready(pilot)
        await send(pilot, "one block")
        app.chat.chatlog.views[-1].focus()
        await pilot.press("f9")
        await wait_for(pilot, lambda: copied)
        assert copied == ["x"] and not isinstance(app.screen, CodeBlockPicker)


# -- system prompt, details ------------------------------------------------------------------------

async def test_system_prompt_shows_at_the_top_and_folds(store):
    conv = store.create_conversation("fake-model", "Answer [b]briefly[/b].")
    u = store.add_message(conv.id, "user", "hi")
    store.add_message(conv.id, "assistant", "hello", parent_id=u.id)
    app, _ = make_app(conversation_id=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: app.chat.chatlog.views)
        text = screen_text(app)
        assert "System prompt" in text and "Answer [b]briefly[/b]." in text
        assert text.index("Answer [b]briefly[/b].") < text.index("You")
        await app.chat.run_action("toggle_system_prompt")
        await pilot.pause()
        assert "Answer [b]briefly[/b]." not in screen_text(app) and "System prompt" in screen_text(app)


async def test_details_line_under_a_reply(store):
    app, _ = make_app(script=["one two three"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await pilot.pause()
        assert "fake-model · 3 tokens · 42.0 tok/s" in screen_text(app)


async def test_palette_lists_and_runs_the_message_features(store, home):
    app, factory = make_app(script=["first answer", "second answer"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for title in ("Previous branch", "Next branch", "Attach a file", "Copy a code block",
                      "Export chat as Markdown", "Export chat as JSON", "Fold or unfold the system prompt"):
            assert title in commands, title
        await send(pilot, "question")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.chat.generating)
        await commands["Previous branch"].callback()
        await pilot.pause()
        assert store.thread(factory.made[0].conversation_id)[-1].content == "first answer"
        await commands["Export chat as JSON"].callback()
        await prompt_answer(pilot)
        await wait_for(pilot, lambda: list(home.glob("qwenchat-*.json")))


async def test_system_prompt_set_with_f4_appears_and_clearing_removes_it(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for text in ("Be [i]brief[/i].", ""):
            await open_system_prompt(pilot)
            app.screen.dismiss(text)
            await wait_for(pilot, lambda: (app.chat.chatlog.system_prompt_view is not None) == bool(text))
            await pilot.pause()
            assert ("Be [i]brief[/i]." in screen_text(app)) == bool(text)
