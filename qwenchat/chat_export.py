"""Exporting one conversation to a file from the app: a default path, the text, the write.

The text comes from the store's own exporters (`Store.export_conversation` for JSON, which keeps
every branch and re-imports; `to_markdown` for the active thread), so the app writes exactly
what `qwenchat history export` prints. Errors are `QwenchatError`s with a hint (a folder that
does not exist, no permission, a file already there), for the face to show, never to raise.
No torch, no textual.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

from qwenchat.errors import QwenchatError
from qwenchat.paths import user_path

Format = Literal["md", "json"]
SUFFIX: dict[str, str] = {"md": ".md", "json": ".json"}
SLUG_LENGTH = 40


class ExportError(QwenchatError):
    """The export could not be written."""


class ExportExists(ExportError):
    """The target file exists; the face asks before overwriting it."""


def slug(title: str | None) -> str:
    """A file-name-safe form of a title: ASCII lowercase words joined by '-', at most
    SLUG_LENGTH characters, cut at a word boundary; "chat" when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", title or "").encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    out = ""
    for w in words:
        candidate = f"{out}-{w}" if out else w
        if len(candidate) > SLUG_LENGTH:
            break
        out = candidate
    return out or (words[0][:SLUG_LENGTH] if words else "chat")


def default_path(conversation_id: int, title: str | None, fmt: Format, folder: Path | None = None) -> Path:
    """~/qwenchat-<id>-<title-slug>.<md|json>, or -2, -3, ... when that file exists already."""
    folder = folder if folder is not None else Path.home()
    stem = f"qwenchat-{conversation_id}-{slug(title)}"
    path = folder / f"{stem}{SUFFIX[fmt]}"
    n = 2
    while path.exists():
        path = folder / f"{stem}-{n}{SUFFIX[fmt]}"
        n += 1
    return path


def format_for(path: Path, chosen: Format) -> Format:
    """The file's own suffix wins (a user who types `chat.json` wants JSON), else `chosen`."""
    suffix = path.suffix.lower()
    return "json" if suffix == ".json" else "md" if suffix in (".md", ".markdown") else chosen


def render(store: Any, conversation_id: int, fmt: Format) -> str:
    from qwenchat.store import to_markdown

    if fmt == "json":
        return json.dumps(store.export_conversation(conversation_id), ensure_ascii=False, indent=2) + "\n"
    conv = store.get_conversation(conversation_id)
    return to_markdown(conv, store.thread(conv.id))


def write_export(store: Any, conversation_id: int, path: str | Path, fmt: Format,
                 overwrite: bool = False) -> Path:
    """Write the conversation to `path` (~ expanded) in the format its suffix names (else
    `fmt`). Returns the path written."""
    target = user_path(path)
    if target.is_dir():
        raise ExportError(f"{target} is a folder", "add a file name, e.g. " + str(target / f"chat.{fmt}"))
    if target.exists() and not overwrite:
        raise ExportExists(f"{target} exists already", "confirm to overwrite it, or choose another name")
    text = render(store, conversation_id, format_for(target, fmt))
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ExportError(f"cannot write {target}: {e.strerror or e}",
                          "choose a folder that exists and that you can write to") from e
    return target
