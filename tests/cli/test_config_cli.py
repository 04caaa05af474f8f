"""`qwenchat config path|show|get|set|unset`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qwenchat.cli import run
from qwenchat.paths import config_file

ROOT = Path(__file__).resolve().parents[2]


def test_path(capsys) -> None:
    assert run(["config", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(config_file())


def test_set_then_show_and_get(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(["config", "set", "theme", "nord"]) == 0
    assert run(["config", "set", "temperature", "0.3"]) == 0
    assert run(["config", "set", "dtype", "bf16"]) == 0
    assert tomllib.loads(config_file().read_text()) == {
        "theme": "nord", "temperature": 0.3, "dtype": "bfloat16"}
    capsys.readouterr()
    monkeypatch.setenv("QWENCHAT_THEME", "dracula")
    assert run(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert 'theme = "dracula"  # environment QWENCHAT_THEME' in out
    assert "temperature = 0.3  # config file" in out
    assert "# seed is not set" in out
    assert run(["config", "list"]) == 0  # the name other tools use (it was "No such command")
    assert capsys.readouterr().out == out
    assert run(["config", "get", "temperature"]) == 0
    assert capsys.readouterr().out == "0.3\n"
    assert run(["config", "set", "theme", "gruvbox"]) == 0
    assert "QWENCHAT_THEME is set in the environment" in capsys.readouterr().err


def test_get_unset_key_exits_1(capsys) -> None:
    assert run(["config", "get", "seed"]) == 1
    assert "seed is not set" in capsys.readouterr().err


def test_set_invalid_value_and_unknown_key(capsys) -> None:
    """Usage errors (exit status 2), as the same value given to `ask` as a flag is."""
    assert run(["config", "set", "top_p", "3"]) == 2
    err = capsys.readouterr().err
    assert "error: invalid value '3' for top_p" in err and "at most 1" in err
    assert run(["config", "set", "colour", "red"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'colour'" in err and "did you mean 'model'" not in err
    assert run(["config", "set", "devise", "cpu"]) == 2
    assert "did you mean 'device'" in capsys.readouterr().err
    assert not config_file().exists()


def test_set_theme_takes_only_a_theme_the_app_knows(capsys) -> None:
    """An unknown name was stored and the app only warned at start-up: now it is refused, with the
    closest name and the list; qwenchat's own themes and the user's theme files count too."""
    assert run(["config", "set", "theme", "drakula"]) == 2
    err = capsys.readouterr().err
    assert "unknown theme 'drakula'" in err and "did you mean 'dracula'" in err and "qwenchat-dark" in err
    assert not config_file().exists()
    assert run(["config", "set", "theme", "qwenchat-light"]) == 0
    themes = config_file().parent / "themes"
    themes.mkdir()
    (themes / "mine.toml").write_text('name = "mine"\nprimary = "#00ff00"\ndark = true\n')
    assert run(["config", "set", "theme", "mine"]) == 0
    assert tomllib.loads(config_file().read_text())["theme"] == "mine"


def test_set_model_takes_only_a_name_that_means_a_model(capsys, tmp_path, monkeypatch) -> None:
    """`config set model nosuch-alias` was stored, and every later `ask` failed on it (a new-user
    run); a relative folder is stored absolute, as it is read from any folder later."""
    assert run(["config", "set", "model", "nosuch-alias"]) == 2
    assert "unknown model 'nosuch-alias'" in capsys.readouterr().err
    assert run(["config", "set", "model", str(tmp_path / "gone")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run(["config", "set", "model", "~nosuchuser0/m"]) == 2  # no such user: was a RuntimeError traceback
    assert "does not exist" in capsys.readouterr().err
    assert not config_file().exists()
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    for name, stored in (("./mine", str(folder.resolve())), (f"{folder}/", str(folder)),  # one spelling a folder
                         ("Qwen/Qwen2.5-0.5B-Instruct", None),
                         ("http://gpu-box:8000/v1", None)):
        assert run(["config", "set", "model", name]) == 0, capsys.readouterr().err
        assert tomllib.loads(config_file().read_text())["model"] == (stored or name)


def test_unset(capsys) -> None:
    run(["config", "set", "seed", "1"])
    assert run(["config", "unset", "seed"]) == 0
    assert "seed removed" in capsys.readouterr().err
    assert "seed" not in tomllib.loads(config_file().read_text())


def test_broken_config_file_is_reported_without_traceback() -> None:
    config_file().parent.mkdir(parents=True)
    config_file().write_text("top_k = 'many'\n")
    run_ = lambda *args: subprocess.run([sys.executable, "-m", "qwenchat", "config", *args], cwd=ROOT,  # noqa: E731
                                        capture_output=True, text=True, timeout=120)
    proc = run_("get", "top_k")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "invalid value 'many' for top_k" in proc.stderr and "qwenchat config set top_k VALUE" in proc.stderr
    proc = run_("show")  # it stopped at the bad value too; now it shows it, marked
    assert proc.returncode == 0 and "top_k = \"many\"  # config file: INVALID" in proc.stdout


def test_a_bad_value_or_unknown_key_in_the_file_is_repaired_with_config_set_and_unset(capsys) -> None:
    """Every command failed on `temperature = 500` in the file, the ones that would fix it too
    (found hands-on); other lines are kept as written."""
    config_file().parent.mkdir(parents=True)
    config_file().write_text('temperature = 500\ntheme = "nord"\ncolour = "red"\n')
    assert run(["config", "get", "theme"]) == 1  # every start stops here until it is fixed
    assert run(["config", "set", "temperature", "0.5"]) == 0
    assert tomllib.loads(config_file().read_text()) == {"temperature": 0.5, "theme": "nord", "colour": "red"}
    capsys.readouterr()
    assert run(["config", "get", "theme"]) == 1
    assert "remove it with `qwenchat config unset colour`" in capsys.readouterr().err
    assert run(["config", "unset", "colour"]) == 0
    assert tomllib.loads(config_file().read_text()) == {"temperature": 0.5, "theme": "nord"}
    assert run(["config", "get", "theme"]) == 0
    assert run(["config", "unset", "colr"]) == 2  # not in the file: still a typo to point out
    assert run(["config", "get", "colr"]) == 2
