"""The system prompt of the current conversation, and the presets library beside it.

Presets are the store's named system prompts, the same ones `qwenchat ask --preset` uses:
save the text as a preset, load a preset into the editor, rename or delete one. Apply returns
the edited text (empty clears the system prompt); Escape returns None and changes nothing.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, TextArea
from textual.widgets.option_list import Option

from qwenchat.tui.screens.dialogs import ConfirmScreen, TextPrompt
from qwenchat.tui.widgets.text_fields import TextEditor


class SystemPromptScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    SystemPromptScreen { align: center middle; }
    SystemPromptScreen > Vertical { width: 90%; max-width: 110; height: auto; max-height: 95%;
        border: thick $primary; background: $surface; padding: 1 2; }
    SystemPromptScreen .title { text-style: bold; }
    SystemPromptScreen #prompt { height: 8; }
    SystemPromptScreen #presets { height: auto; max-height: 8; }
    SystemPromptScreen Horizontal { height: auto; margin-top: 1; }
    SystemPromptScreen Button { margin-right: 1; min-width: 8; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "apply", "Apply")]

    def __init__(self, store: Any, text: str | None) -> None:
        super().__init__()
        self.store, self.text = store, text or ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("System prompt for this conversation (Ctrl+S applies)", classes="title")
            yield TextEditor(self.text, id="prompt", soft_wrap=True)
            yield Label("Presets", classes="title")
            yield OptionList(id="presets", markup=False)  # preset names are user text
            with Horizontal():
                yield Button("Use", id="use")
                yield Button("Save as…", id="save")
                yield Button("Rename…", id="rename")
                yield Button("Delete", id="delete", variant="error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Apply", id="apply", variant="primary")

    def on_mount(self) -> None:
        self.reload()

    def reload(self, select: str | None = None) -> None:
        ol = self.query_one("#presets", OptionList)
        ol.clear_options()
        presets = self.store.list_presets()
        ol.add_options([Option(p.name, id=p.name) for p in presets])
        names = [p.name for p in presets]
        if names:  # one is always highlighted: Use/Rename/Delete did nothing until an arrow key
            ol.highlighted = names.index(select) if select in names else 0

    @property
    def selected(self) -> str | None:
        ol = self.query_one("#presets", OptionList)
        if ol.highlighted is None or ol.option_count == 0:
            return None
        return ol.get_option_at_index(ol.highlighted).id

    def _picked(self) -> str | None:
        """The highlighted preset, or None with a note saying why nothing happens."""
        if self.selected is None:
            self.notify("No presets yet: write a system prompt, then Save as…", title="Presets", markup=False)
        return self.selected

    def _fail(self, err: Exception) -> None:
        self.notify(getattr(err, "message", str(err)), title="Presets", severity="error", markup=False)

    @on(OptionList.OptionSelected, "#presets")
    @on(Button.Pressed, "#use")
    def use(self) -> None:
        if (name := self._picked()) is not None:
            self.query_one("#prompt", TextArea).text = self.store.get_preset(name).text

    @on(Button.Pressed, "#save")
    @work
    async def save(self) -> None:
        name = await self.app.push_screen_wait(TextPrompt("Save the system prompt as preset:", self.selected or ""))
        if not name:
            return
        name = name.strip()
        text = self.query_one("#prompt", TextArea).text
        held = next((p.text for p in self.store.list_presets() if p.name == name), None)
        if held is not None and held != text and not await self.app.push_screen_wait(
                ConfirmScreen(f"Preset {name!r} exists. Replace its text with this one?", yes="Replace")):
            return  # its text was replaced silently, "Saved preset" said (a new-user run)
        try:
            self.store.save_preset(name, text)
        except Exception as e:  # StoreError: empty text, bad name
            return self._fail(e)
        self.reload(select=name)
        self.notify(f"{'Replaced' if held is not None else 'Saved'} preset {name!r}", markup=False)  # a name is user text

    @on(Button.Pressed, "#rename")
    @work
    async def rename(self) -> None:
        old = self._picked()
        if old is None:
            return
        new = await self.app.push_screen_wait(TextPrompt(f"Rename preset {old!r} to:", old))
        if new and new != old:
            try:
                self.store.rename_preset(old, new)
            except Exception as e:
                return self._fail(e)
            self.reload(select=new)

    @on(Button.Pressed, "#delete")
    @work
    async def delete(self) -> None:
        name = self._picked()
        if name is None:
            return
        if await self.app.push_screen_wait(ConfirmScreen(f"Delete preset {name!r}?")):
            try:
                self.store.delete_preset(name)
            except Exception as e:
                return self._fail(e)
            self.reload()

    def action_apply(self) -> None:
        self.dismiss(self.query_one("#prompt", TextArea).text.strip())

    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
