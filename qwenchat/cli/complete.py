"""Shell completion values: models, conversation ids, presets, setting keys and choices.

Each completer runs on a shell's TAB, so it only lists folders and reads the history
database; it never imports torch, never creates the database, never touches the network,
and a failure completes nothing rather than printing an error into the command line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

Item = tuple[str, str]  # (value, help shown by zsh and fish)
HUB_FOLDER_PREFIX = "models--"  # the Hugging Face cache's repo folder naming


def quiet(fn: Callable[[str], list[Item]]) -> Callable[[str], list[Item]]:
    @functools.wraps(fn)
    def run(incomplete: str) -> list[Item]:
        try:
            return [(v, h) for v, h in fn(incomplete) if v.startswith(incomplete)]
        except Exception:  # noqa: BLE001 - a completion must never break the user's shell line
            return []

    return run


@quiet
def models(incomplete: str) -> list[Item]:
    """Aliases, models in the Hugging Face cache, and imported GGUF models."""
    from qwenchat import catalog, hub, paths

    items = [(alias, e.description) for alias, e in catalog.CATALOG.items()]
    known = {e.repo_id.lower() for e in catalog.CATALOG.values()}
    for folder in _subfolders(hub.cache_dir()):
        if folder.name.startswith(HUB_FOLDER_PREFIX):
            repo_id = folder.name[len(HUB_FOLDER_PREFIX):].replace("--", "/", 1)
            if repo_id.lower() not in known:
                items.append((repo_id, "downloaded"))
    items += [(f.name, "imported") for f in _subfolders(paths.imported_models_dir()) if (f / "config.json").is_file()]
    return items


@quiet
def conversations(incomplete: str) -> list[Item]:
    """Conversation ids, newest first, with their titles."""
    store = _open_store()
    if store is None:
        return []
    with store:
        return [(str(c.id), c.display_title) for c in store.list_conversations(limit=200)]


@quiet
def presets(incomplete: str) -> list[Item]:
    store = _open_store()
    if store is None:
        return []
    with store:
        return [(p.name, _first_line(p.text)) for p in store.list_presets()]


@quiet
def setting_keys(incomplete: str) -> list[Item]:
    from qwenchat import config

    return [(k, "setting") for k in config.KEYS]


def choices(*values: str) -> Callable[[str], list[Item]]:
    return quiet(lambda incomplete: [(v, "") for v in values])


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []


def _open_store():
    from qwenchat.paths import database_file
    from qwenchat.store import Store

    path = database_file()
    return Store.open(path) if path.is_file() else None  # completing never creates the history


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:60]
