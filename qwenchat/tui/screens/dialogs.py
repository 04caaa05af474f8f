"""Small dialogs: yes/no confirmation, one line of text, editing a message, picking from a list."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option

from qwenchat.tui.widgets.prompt_input import PromptInput
from qwenchat.tui.widgets.text_fields import LineInput

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 70; max-width: 100%; height: auto; max-height: 90%; border: thick $primary; background: $surface; padding: 1 2; }}
{name} .title {{ text-style: bold; margin-bottom: 1; width: 100%; }}  /* wraps, never cut */
{name} Horizontal {{ height: auto; align-horizontal: right; margin-top: 1; }}
{name} Button {{ margin-left: 1; }}
"""


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel"), Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str, yes: str = "Delete") -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, classes="title", markup=False)
            with Horizontal():
                yield Button("Cancel", id="no")
                yield Button(self.yes, id="yes", variant="error")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text (a title, a preset name)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TextPrompt")
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.title_text, self.value = title, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title", markup=False)
            yield LineInput(self.value, id="value")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("OK", id="ok", variant="primary")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        value = self.query_one(Input).value.strip()
        if value:
            self.dismiss(value)
        else:  # Enter did nothing at all (a new-user run)
            self.notify("Nothing typed: type it, or Esc to cancel", severity="warning", markup=False)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class EditMessageScreen(ModalScreen[str | None]):
    """Edit an earlier user message and resend it (later turns leave the active branch). Keys as
    in the message box: Enter resends, Ctrl+J breaks the line; the cursor starts at the end."""

    DEFAULT_CSS = DIALOG_CSS.format(name="EditMessageScreen") + "EditMessageScreen PromptInput { max-height: 16; }"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "resend", "Resend")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Edit message (Enter resends, Ctrl+J starts a new line; the later replies are replaced)",
                        classes="title")
            yield PromptInput(id="text")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Resend", id="resend", variant="primary")

    def on_mount(self) -> None:
        box = self.query_one(PromptInput)
        box.placeholder = "The message, edited: Enter resends"
        box.text = self.text
        box.move_cursor(box.document.end)
        box.focus()

    def action_resend(self) -> None:
        text = self.query_one(PromptInput).text
        if text.strip():
            self.dismiss(text)
        else:  # Enter did nothing at all (found hands-on)
            self.notify("An empty message cannot be sent: type one, or Esc to keep the old", severity="warning")

    @on(PromptInput.Submitted)
    def _submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        self.action_resend()

    @on(Button.Pressed, "#resend")
    def _resend(self) -> None:
        self.action_resend()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class PickScreen(ModalScreen[str | None]):
    """Choose one of several (id, label) options; Enter picks, Escape cancels."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PickScreen") + "PickScreen OptionList { height: auto; max-height: 20; }"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, options: list[tuple[str, str]], empty: str = "Nothing to choose") -> None:
        super().__init__()
        self.title_text, self.options, self.empty = title, options, empty

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title", markup=False)
            if self.options:
                yield OptionList(*[Option(label, id=key) for key, label in self.options], id="choices",
                                 markup=False)  # names are user text: "[imported]" must show
            else:
                yield Label(self.empty, markup=False)

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
