"""The model picker (Ctrl+O): a path field for a local model folder or a `.gguf` file, the models
used before (from the history, folders included), and every alias, downloaded or imported model
(`qwenchat.models.list_models()`, no network). It returns a model name or path; the app then
downloads or imports it if needed (with progress) and loads it in a worker. Names are shown as
plain text, so tags such as `[imported]` are visible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from qwenchat.tui.screens.dialogs import DIALOG_CSS


def model_choices(current: str | None = None, used: list[str] | None = None) -> list[tuple[str, str]]:
    """(name, label) for every model the picker offers: the ones used before first."""
    try:
        from qwenchat.models import list_models

        known = list_models()
    except Exception:  # a broken cache folder must not take the picker down
        known = []
    mark = lambda name: "● " if name == current else "  "  # noqa: E731
    out: list[tuple[str, str]] = []
    names = {m.name for m in known}
    for name in used or []:
        if name not in names:
            kind = "gguf" if name.lower().endswith(".gguf") else "folder" if Path(name).expanduser().is_dir() else "used before"
            out.append((name, f"{mark(name)}{name} [{kind}]"))
    for m in known:
        state = "imported" if m.source == "gguf" else "✓ downloaded" if m.offline else "↓ download"
        desc = f" {m.description}" if m.description and m.source != "gguf" else ""
        out.append((m.name, f"{mark(m.name)}{m.name}{desc} [{state}]"))
    return out


def used_models(store: Any) -> list[str]:
    """Models of the stored conversations, most recently used first, each once."""
    seen: dict[str, None] = {}
    try:
        for conv in store.list_conversations(limit=500):
            if conv.model:
                seen.setdefault(conv.model, None)
    except Exception:
        return []
    return list(seen)


def check_path(text: str) -> str | None:
    """The problem with a typed model path, or None when it can be loaded or imported."""
    path = Path(text).expanduser()
    if not path.exists():
        return f"{text} does not exist"
    if path.is_file() and path.suffix.lower() != ".gguf":
        return f"{text} is a file but not a .gguf file: give a model folder or a .gguf file"
    if path.is_dir() and not (path / "config.json").is_file():
        return f"{text} has no config.json: give a Hugging Face model folder"
    return None


class ModelPicker(ModalScreen[str | None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ModelPicker") + """
    ModelPicker > Vertical { width: 90; max-width: 100%; }
    ModelPicker OptionList { height: auto; max-height: 16; }
    ModelPicker .error { color: $text-error; height: auto; }
    ModelPicker .note { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, current: str | None, used: list[str]) -> None:
        super().__init__()
        self.current, self.choices = current, model_choices(current, used)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Choose a model (not yet downloaded ones are fetched first)", classes="title")
            yield Input(placeholder="…or a path: a local model folder or a .gguf file, then Enter", id="path",
                        select_on_focus=False)  # typing on the list moves here: keep what was typed
            yield Label("", id="path-error", classes="error", markup=False)
            if self.choices:
                yield OptionList(*[Option(label, id=key) for key, label in self.choices], id="choices",
                                 markup=False)
            else:
                yield Label("No models known yet: type a path above, or `qwenchat pull` one", classes="note")

    def on_mount(self) -> None:
        self.query_one("#path-error").display = False
        if self.choices:
            options = self.query_one("#choices", OptionList)
            keys = [key for key, _ in self.choices]
            if self.current in keys:  # Enter straight away keeps the model in use
                options.highlighted = keys.index(self.current)
            options.focus()

    def on_key(self, event: events.Key) -> None:
        """Typing on the list goes into the path field: a user typing a path must not have
        their Enter pick (and start downloading) whichever model is highlighted."""
        path = self.query_one("#path", Input)
        if event.is_printable and event.character and self.focused is not path:
            event.stop()
            event.prevent_default()
            path.focus()
            path.insert_text_at_cursor(event.character)

    @on(Input.Submitted, "#path")
    def _path(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        problem = check_path(text)
        error = self.query_one("#path-error", Label)
        error.update(f"✗ {problem}" if problem else "")
        error.display = problem is not None
        if problem is None:
            self.dismiss(str(Path(text).expanduser()))

    @on(OptionList.OptionSelected, "#choices")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


def model_picker(current: str | None = None, store: Any = None) -> ModelPicker:
    return ModelPicker(current, used_models(store) if store is not None else [])
