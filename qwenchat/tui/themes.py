"""Theme files: TOML documents that become Textual `Theme`s.

Looked up in order (a later file with the same `name` wins): the themes shipped in the wheel
(`qwenchat/themes`, force-included from the repository's top-level `themes/`), the repository's
`themes/` next to the package (a source checkout), then the user's own folder
(`qwenchat.paths.user_themes_dir()`). A file that cannot be read is skipped and reported, never
fatal. A theme file holds `name`, `dark`, the colours Textual's `Theme` takes (`primary`,
`secondary`, `accent`, `foreground`, `background`, `surface`, `panel`, `success`, `warning`,
`error`, `boost`) and an optional `[variables]` table.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from textual.theme import Theme

import qwenchat

DEFAULT_THEME = "qwenchat-dark"
_COLOURS = ("primary", "secondary", "accent", "foreground", "background", "surface", "panel",
            "success", "warning", "error", "boost")


@dataclass
class LoadedThemes:
    themes: dict[str, Theme] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def builtin_dirs() -> list[Path]:
    pkg = Path(qwenchat.__file__).resolve().parent
    return [d for d in (pkg / "themes", pkg.parent / "themes") if d.is_dir()]


def theme_dirs() -> list[Path]:
    from qwenchat.paths import user_themes_dir

    dirs = builtin_dirs()
    if dirs:
        dirs = dirs[:1]  # the packaged copy when installed, the checkout's folder otherwise
    user = user_themes_dir()
    return dirs + ([user] if user.is_dir() else [])


def parse_theme(text: str, source: str) -> Theme:
    """One theme from TOML text; ValueError names what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML ({e})") from None
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: needs a `name`")
    if not isinstance(data.get("primary"), str):
        raise ValueError(f"{source}: needs a `primary` colour")
    kwargs = {k: data[k] for k in _COLOURS if isinstance(data.get(k), str)}
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ValueError(f"{source}: [variables] must be a table")
    extra = {}
    for key in ("luminosity_spread", "text_alpha"):
        if isinstance(data.get(key), (int, float)):
            extra[key] = float(data[key])
    try:
        return Theme(name=name.strip(), dark=bool(data.get("dark", True)),
                     variables={str(k): str(v) for k, v in variables.items()}, **kwargs, **extra)
    except Exception as e:  # a bad colour string
        raise ValueError(f"{source}: {e}") from None


def load_themes(dirs: list[Path] | None = None) -> LoadedThemes:
    out = LoadedThemes()
    for folder in theme_dirs() if dirs is None else dirs:
        for path in sorted(folder.glob("*.toml")):
            try:
                theme = parse_theme(path.read_text(encoding="utf-8"), str(path))
            except (OSError, ValueError) as e:
                out.problems.append(str(e))
                continue
            out.themes[theme.name] = theme
    return out
