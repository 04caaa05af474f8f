"""The model picker (Ctrl+O): a path field for a local model folder, a `.gguf` file or a server's
URL (`http://host:8000/v1`, `...#MODEL_ID`), the models used before (from the history, folders
and servers included), and every alias, downloaded or imported model (`qwenchat.models.list_models()`,
no network). It returns a model name, path or URL; the app then downloads or imports it if needed
(with progress), or connects to the server, and loads it in a worker. A server URL without a model
is asked for its models (in a thread): one is taken, several are listed to pick one, and a
failure (refused, a wrong key, ...) is shown under the field with its fix. Names are shown as
plain text, so tags such as `[imported]` are visible."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from qwenchat.paths import user_path
from qwenchat.remote.reference import RemoteRef, is_remote
from qwenchat.tui.errors import error_text
from qwenchat.tui.screens.dialogs import DIALOG_CSS
from qwenchat.tui.widgets.text_fields import LineInput

LIST_TIMEOUT_S = 30.0  # asking a server for its models (connection refused is at once)


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
            kind = ("server" if is_remote(name) else "gguf" if name.lower().endswith(".gguf")
                    else "folder" if user_path(name).is_dir() else "used before")
            out.append((name, f"{mark(name)}{name} [{kind}]"))
    for m in known:
        state = ("imported" if m.source == "gguf" else m.description if m.source in ("folder", "file")
                 else "✓ downloaded" if m.offline else "↓ download")
        desc = f" {m.description}" if m.description and m.source in ("alias", "hub") else ""
        desc += " (default)" if m.default else ""
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


def server_choices(ref: RemoteRef, models: list[Any], current: str | None = None) -> list[tuple[str, str]]:
    """(name, label) for each model a server offers; the name is `BASE_URL#MODEL_ID`."""
    out = []
    for m in models:
        name = replace(ref, model=m.id).label
        ctx = f" [context {m.context_window}]" if m.context_window else ""
        out.append((name, f"{'● ' if name == current else '  '}{m.id}{ctx}"))
    return out


def server_models(ref: RemoteRef, key: str | None = None) -> list[Any]:
    """What the server offers (the network: call it in a thread). `key`: the --api-key flag;
    otherwise the config file's, then the environment's (qwenchat.remote.reference.api_key)."""
    from qwenchat.config import load_settings
    from qwenchat.remote.client import list_models
    from qwenchat.remote.reference import api_key

    return list_models(ref, api_key(key or load_settings().api_key), LIST_TIMEOUT_S)


def check_typed(text: str, known: set[str]) -> str | None:
    """The problem with a typed model (a name as listed, an alias, a Hub repo id, a folder or a
    .gguf file), or None when it can be loaded, downloaded or imported."""
    from qwenchat.models import name_kind

    if text in known or name_kind(text) in ("alias", "imported", "hub"):
        return None
    return check_path(text)  # a file or folder: what is wrong with it


def check_path(text: str) -> str | None:
    """The problem with a typed model path, or None when it can be loaded or imported."""
    path = user_path(text)
    if not path.exists():
        return f"{text} is not a model's name, a folder or a .gguf file"
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
        self._asking: RemoteRef | None = None  # the server asked last: only its answer is shown

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Choose a model (not yet downloaded ones are fetched first)", classes="title")
            yield LineInput(placeholder="…or type a name, folder, .gguf file or server URL (http://host:8000/v1)",
                        id="path", select_on_focus=False)  # typing on the list moves here: keep what was typed
            yield Label("", id="path-error", classes="error", markup=False)
            yield Label("", id="path-note", classes="note", markup=False)
            yield OptionList(*[Option(label, id=key) for key, label in self.choices], id="choices", markup=False)
            yield Label("No models known yet: type a path or a server URL above, or `qwenchat pull` one",
                        id="none-known", classes="note")

    def on_mount(self) -> None:
        self.query_one("#path-error").display = False
        self.query_one("#path-note").display = False
        self.query_one("#choices").display = bool(self.choices)
        self.query_one("#none-known").display = not self.choices
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
        if is_remote(text):
            return self._server(text)
        problem = check_typed(text, {key for key, _ in self.choices})
        self._problem(problem)
        if problem is None:
            path = user_path(text)
            self.dismiss(str(path) if path.exists() else text)

    def _problem(self, problem: str | None, hint: str | None = None) -> None:
        error = self.query_one("#path-error", Label)
        error.update(f"✗ {problem}" + (f"\nFix: {hint}" if hint else "") if problem else "")
        error.display = problem is not None
        if problem is not None:
            self._note("")

    def _note(self, text: str) -> None:
        note = self.query_one("#path-note", Label)
        note.update(text)
        note.display = bool(text)

    def _server(self, text: str) -> None:
        """A server URL: with a model named, that one; otherwise ask the server what it offers."""
        try:
            ref = RemoteRef.parse(text)
        except Exception as e:  # a malformed URL, credentials in it: the fix is in the message
            return self._problem(*error_text(e))
        if ref.model:
            self.dismiss(ref.label)  # not returned: a handler's awaited result must not be the dismissal
            return
        self._problem(None)
        self._note(f"Asking {ref.host} for its models…")
        self._asking = ref
        self._ask_server(ref)

    @work(thread=True, exclusive=True, group="server-models", exit_on_error=False)
    def _ask_server(self, ref: RemoteRef) -> None:
        try:
            models = server_models(ref, getattr(self.app, "api_key", None))
        except Exception as e:  # noqa: BLE001 - a RemoteError (refused, 401, ...) is shown, not raised
            self.app.call_from_thread(self._server_failed, ref, e)
            return
        self.app.call_from_thread(self._offer, ref, models)

    def _server_failed(self, ref: RemoteRef, error: Exception) -> None:
        if self.is_attached and ref == self._asking:
            self._problem(*error_text(error))

    def _offer(self, ref: RemoteRef, models: list[Any]) -> None:
        """One model: that one. Several: listed in place of the local ones, to pick one."""
        if not self.is_attached or ref != self._asking:  # closed, or another URL was entered since
            return
        if not models:
            return self._problem(f"{ref.host} offers no models", "load a model on the server first")
        if len(models) == 1:
            self.dismiss(replace(ref, model=models[0].id).label)
            return
        self._note(f"{ref.host} offers {len(models)} models: pick one (Esc cancels)")
        choices = server_choices(ref, models, self.current)
        options = self.query_one("#choices", OptionList)
        options.clear_options()
        options.add_options([Option(label, id=key) for key, label in choices])
        options.display, self.query_one("#none-known").display = True, False
        options.highlighted = 0
        options.focus()

    @on(OptionList.OptionSelected, "#choices")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


def model_picker(current: str | None = None, store: Any = None) -> ModelPicker:
    return ModelPicker(current, used_models(store) if store is not None else [])
