"""Theme files: the shipped ones load, a user's own file is picked up, a broken one is reported;
and the TUI package never imports torch."""

from __future__ import annotations

import subprocess
import sys

from qwenchat.paths import user_themes_dir
from qwenchat.tui.themes import builtin_dirs, load_themes


def test_shipped_themes_load():
    assert builtin_dirs(), "no themes folder found next to the package"
    loaded = load_themes()
    assert {"qwenchat-dark", "qwenchat-light", "qwenchat-high-contrast"} <= set(loaded.themes)
    assert loaded.problems == []
    assert loaded.themes["qwenchat-light"].dark is False


def test_user_theme_is_picked_up_and_broken_file_reported():
    folder = user_themes_dir()
    folder.mkdir(parents=True)
    (folder / "mine.toml").write_text('name = "mine"\nprimary = "#ff0000"\nbackground = "#101010"\n')
    (folder / "broken.toml").write_text('name = "broken"\n')  # no primary colour
    loaded = load_themes()
    assert loaded.themes["mine"].primary == "#ff0000"
    assert "broken" not in loaded.themes
    assert any("broken.toml" in p and "primary" in p for p in loaded.problems)


def test_tui_imports_no_torch():
    code = "import sys, qwenchat.tui.app, qwenchat.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
