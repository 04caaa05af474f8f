"""The model picker: the seed aliases (marked when downloaded) and every downloaded or imported
model, from `qwenchat.models.list_models()` (no network). Choosing one returns its name; the app
then downloads it if needed (with progress) and loads it in a worker."""

from __future__ import annotations

from qwenchat.tui.screens.dialogs import PickScreen


def model_choices(current: str | None = None) -> list[tuple[str, str]]:
    from qwenchat.models import list_models

    out = []
    for m in list_models():
        state = "imported" if m.source == "gguf" else "✓ downloaded" if m.offline else "↓ download"
        mark = "● " if m.name == current else "  "
        desc = f" {m.description}" if m.description and m.source != "gguf" else ""
        out.append((m.name, f"{mark}{m.name}{desc} [{state}]"))
    return out


def model_picker(current: str | None = None) -> PickScreen:
    try:
        choices = model_choices(current)
    except Exception:  # a broken cache folder must not take the picker down
        choices = []
    return PickScreen("Choose a model (not yet downloaded ones are fetched first)", choices,
                      empty="No models known")
