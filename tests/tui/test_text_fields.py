"""Every text field keeps the order of keys that arrive in one burst (qwenchat/tui/widgets/
text_fields.py): 40 Backspaces then "name, year int, rivers: a list" in the sampling dialog's JSON
output field gave "name, yt, rivers: a" (found in tmux), as the letters were typed before the
Backspaces ran. The fields otherwise behave as Textual's: Enter submits, Tab moves on, Escape
closes the dialog, a field's validation shows."""

from __future__ import annotations

import ast
from pathlib import Path

from textual.widgets import Input, TextArea

import qwenchat.tui
from qwenchat.tui.screens.models import ModelPicker
from qwenchat.tui.screens.settings import SettingsScreen
from qwenchat.tui.widgets.text_fields import LineInput, TextEditor
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, burst, make_app, open_rename, open_sampling, open_system_prompt, ready, send
from tests.tui.test_structure import shadowed

BACKSPACE, DELETE, LEFT, HOME, END = "\x7f", "\x1b[3~", "\x1b[D", "\x1b[H", "\x1b[F"
CTRL_W, CTRL_U = "\x17", "\x15"


async def test_the_json_output_field_keeps_a_burst_in_order(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_sampling(pilot)
        await pilot.press(*["tab"] * 7)  # Tab moves from field to field, as before
        field = screen.query_one("#constraint", Input)
        assert app.focused is field and isinstance(field, LineInput)
        await pilot.press(*"city str")
        await burst(pilot, BACKSPACE * 40 + "name, year int, rivers: a list")
        assert field.value == "name, year int, rivers: a list"
        await burst(pilot, BACKSPACE * 4 + "lisx" + BACKSPACE + "t" + CTRL_W + "list")
        assert field.value == "name, year int, rivers: a list"
        await burst(pilot, CTRL_U + "name, year integr")  # checked as typed: flagged under the field
        assert field.value == "name, year integr" and field.has_class("-invalid")
        assert "integr" in str(screen.query_one("#constraint-error").render())
        await burst(pilot, BACKSPACE * 3)
        assert field.value == "name, year int" and not field.has_class("-invalid")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.session.options.constraint["required"] == ["name", "year"]


async def test_a_number_field_keeps_a_burst_in_order_and_escape_closes(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_sampling(pilot)
        field = screen.query_one("#temperature", Input)
        assert app.focused is field
        await burst(pilot, "0.95" + LEFT + BACKSPACE + "8" + END + BACKSPACE + "7" + HOME + "-")
        assert field.value == "-0.87" and field.has_class("-invalid")
        await burst(pilot, HOME + DELETE)
        assert field.value == "0.87" and not field.has_class("-invalid")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.session.options.temperature != 0.87


async def test_a_burst_across_tab_fills_each_field_in_turn(store):
    """`0.5`, Tab, `0.9`, Tab, `30` in one read gave temperature "0.50.930" (a second new-user run):
    the keys behind the Tab were queued at the field before the app moved the focus on."""
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_sampling(pilot)
        for name in ("temperature", "top_p", "top_k"):
            screen.query_one(f"#{name}", Input).value = ""
        await burst(pilot, "0.5\t0.9\t30")
        await pilot.pause()
        values = {name: screen.query_one(f"#{name}", Input).value for name in ("temperature", "top_p", "top_k")}
        assert values == {"temperature": "0.5", "top_p": "0.9", "top_k": "30"}
        assert app.focused is screen.query_one("#top_k", Input)
        await burst(pilot, "\x1b[Z5")  # Shift+Tab back, in the same read as the key after it
        await pilot.pause()
        top_p = screen.query_one("#top_p", Input)
        assert app.focused is top_p and top_p.value == "5"  # a field reached by Tab is selected: typing replaces it
        assert values["top_k"] == screen.query_one("#top_k", Input).value


async def test_a_burst_from_a_button_into_a_field_types_there(store):
    """Shift+Tab from Temperature wraps to the Save button; then Tab and "0.05" in one read moved
    the focus to Temperature but lost the digits (a new-user run): they were queued at the button,
    which does not type, and went nowhere."""
    from textual.widgets import Button

    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_sampling(pilot)
        screen.query_one("#save", Button).focus()
        await pilot.pause()
        await burst(pilot, "\t0.05")  # from the last widget, Tab wraps to the first field
        await pilot.pause()
        temperature = screen.query_one("#temperature", Input)
        assert app.focused is temperature and temperature.value == "0.05"


async def test_the_chat_search_keeps_a_burst_in_order(store):
    app, _ = make_app(script=["r1", "r2"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "apples")
        await pilot.press("ctrl+n")
        await send(pilot, "pears")
        await pilot.press("ctrl+f")
        search = app.chat.sidebar.search_box
        assert app.focused is search and isinstance(search, LineInput)
        await pilot.press(*"pears")
        await burst(pilot, BACKSPACE * 10 + "apple")
        assert search.value == "apple"
        await wait_for(pilot, lambda: len(app.chat.sidebar.conversation_ids) == 1)


async def test_the_rename_dialog_keeps_a_burst_in_order_and_enter_submits(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        cid = await open_rename(pilot)
        field = app.screen.query_one(Input)
        await burst(pilot, BACKSPACE * 30 + "Rivers of Europe")
        assert field.value == "Rivers of Europe"
        await burst(pilot, "\r")
        await wait_for(pilot, lambda: store.get_conversation(cid).title == "Rivers of Europe")


async def test_the_model_path_field_keeps_a_burst_in_order(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.push_screen(ModelPicker(None, []))
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPicker))
        field = app.screen.query_one("#path", Input)
        field.focus()
        await pilot.press(*"/tmp/moddel")
        await burst(pilot, BACKSPACE * 3 + "el.ggfu" + BACKSPACE * 2 + "uf")
        assert field.value == "/tmp/model.gguf"


async def test_the_system_prompt_editor_keeps_a_burst_in_order(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await open_system_prompt(pilot)
        editor = app.screen.query_one("#prompt", TextArea)
        assert isinstance(editor, TextEditor)
        editor.focus()
        await pilot.press(*"Be long.")
        await burst(pilot, BACKSPACE * 20 + "Be brief." + LEFT + BACKSPACE * 5 + "short")
        assert editor.text == "Be short."
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.session.system_prompt == "Be short.")


async def test_the_message_box_keeps_a_burst_in_order(store):
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await burst(pilot, "hello" + BACKSPACE + "p me, abc" + LEFT + "X")
        assert app.chat.input.text == "hellp me, abXc"


def test_no_bare_textual_text_field_in_the_app():
    """A field written as Textual's own Input or TextArea would garble a burst again."""
    root = Path(qwenchat.tui.__file__).parent
    bare = [f"{path.relative_to(root)}:{node.lineno}"
            for path in root.rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("Input", "TextArea")]
    assert bare == []


def test_the_fields_shadow_no_private_textual_name():
    assert shadowed(LineInput, Input) == [] and shadowed(TextEditor, TextArea) == []
