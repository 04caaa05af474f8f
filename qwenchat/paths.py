"""Where qwenchat keeps its files.

`QWENCHAT_HOME` overrides the root of everything (tests set it); otherwise the platform's user
data and config directories (platformdirs). Models downloaded from the Hub live in the standard
Hugging Face cache (HF_HOME / HF_HUB_CACHE), not here, so other tools share them.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "qwenchat"


def user_path(text: str | Path) -> Path:
    """A path a user typed, `~` and `~name` expanded; a `~name` of no user stays as typed (it then
    does not exist, and the caller says so: Path.expanduser raised RuntimeError, a traceback)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def _home() -> Path | None:
    value = os.environ.get("QWENCHAT_HOME")
    return user_path(value) if value else None


def data_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "data"
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False)


def config_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "config"
    from platformdirs import user_config_path

    return user_config_path(APP_NAME, appauthor=False)


def cache_dir() -> Path:
    """Files qwenchat can always rebuild (the compiled int8 kernel, int8 weight caches)."""
    home = _home()
    if home is not None:
        return home / "cache"
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME, appauthor=False)


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


def int8_cache_dir() -> Path:
    """The int8 weight caches, one folder per model (engine/prefetch.py's int8_cache_path)."""
    return cache_dir() / "int8"


def config_file() -> Path:
    return config_dir() / "config.toml"


def database_file() -> Path:
    return data_dir() / "history.db"


def imported_models_dir() -> Path:
    """Models converted by `qwenchat import` (GGUF -> HF-format directories)."""
    return data_dir() / "models"


def user_themes_dir() -> Path:
    return config_dir() / "themes"
