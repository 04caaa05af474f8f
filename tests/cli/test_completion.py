"""Shell completion (bash, zsh, fish as typer offers) of commands, options, models, presets,
conversation ids and setting keys, in a real process that never imports torch; and `--help`
showing flags as flags."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwenchat.store import Store

# Runs qwenchat as the shell's completion call does, then says whether torch was imported.
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('torch imported\\n' if 'torch' in sys.modules else ''))\n"
    "from qwenchat.cli import main\n"
    "main()\n"
)


@pytest.fixture
def home(isolated_home: Path, tmp_path: Path) -> Path:
    """A history with two conversations and a preset, a downloaded and an imported model."""
    with Store.open(isolated_home / "data" / "history.db") as store:
        store.create_conversation("tiny", None)
        second = store.create_conversation("tiny", None)
        store.update_conversation(second.id, title="about monads")
        store.save_preset("reviewer", "You review code.\nBe brief.")
    (tmp_path / "hf-home" / "hub" / "models--someone--Qwen2-Custom" / "snapshots").mkdir(parents=True)
    from qwenchat.paths import imported_models_dir

    imported = imported_models_dir() / "my-gguf"
    imported.mkdir(parents=True)
    (imported / "config.json").write_text("{}")
    return isolated_home


def complete(shell: str, line: str, home: Path) -> tuple[list[str], str]:
    env = {**os.environ, "QWENCHAT_HOME": str(home), "_QWENCHAT_COMPLETE": f"complete_{shell}"}
    words = line.split(" ")
    if shell == "bash":
        env |= {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    else:
        env |= {"_TYPER_COMPLETE_ARGS": line}
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines(), r.stderr


def test_models_complete_aliases_downloaded_and_imported_without_torch(home):
    values, err = complete("bash", "qwenchat ask -m ", home)
    assert {"qwen2.5-0.5b-instruct", "someone/Qwen2-Custom", "my-gguf"} <= set(values), values
    assert "torch imported" not in err
    values, _ = complete("bash", "qwenchat pull qwen2-", home)
    assert values and all(v.startswith("qwen2-") for v in values)


def test_conversation_ids_presets_and_setting_keys_complete(home):
    assert complete("bash", "qwenchat ask --cid ", home)[0][:2] == ["2", "1"]  # newest first
    assert complete("bash", "qwenchat history show ", home)[0][:2] == ["2", "1"]
    assert complete("bash", "qwenchat ask --preset r", home)[0] == ["reviewer"]
    assert complete("bash", "qwenchat preset show ", home)[0] == ["reviewer"]
    assert "max_input" in complete("bash", "qwenchat config set m", home)[0]


def test_commands_and_options_complete(home):
    assert "ask" in complete("bash", "qwenchat a", home)[0]
    assert {"--truncate", "--temperature"} <= set(complete("bash", "qwenchat ask --t", home)[0])
    assert complete("bash", "qwenchat ask --truncate ", home)[0] == ["head", "tail"]


def test_zsh_and_fish_get_values_with_their_descriptions(home):
    zsh, err = complete("zsh", "qwenchat ask --cid ", home)
    assert "about monads" in "\n".join(zsh) and "torch imported" not in err
    fish, _ = complete("fish", "qwenchat ask --preset ", home)
    assert any(line.startswith("reviewer") and "You review code." in line for line in fish), fish


def test_show_completion_prints_the_shell_script(home):
    env = {**os.environ, "QWENCHAT_HOME": str(home), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    for shell in ("bash", "zsh", "fish"):
        r = subprocess.run([sys.executable, "-m", "qwenchat", "--show-completion", shell],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0 and "_QWENCHAT_COMPLETE" in r.stdout, r.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_completion_writes_the_bash_script(home, tmp_path):
    env = {**os.environ, "QWENCHAT_HOME": str(home), "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m qwenchat --install-completion"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    script = tmp_path / ".bash_completions" / "qwenchat.sh"
    assert "_QWENCHAT_COMPLETE" in script.read_text()


def test_help_shows_flags_without_a_value_type():
    r = subprocess.run([sys.executable, "-m", "qwenchat", "ask", "--help"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "COLUMNS": "100"})
    assert r.returncode == 0
    flags = [line for line in r.stdout.splitlines() if "--continue" in line or "--no-save" in line]
    assert len(flags) == 2 and all("<bool>" not in line for line in flags), flags
    assert "<bool>" not in r.stdout
    assert "--max-tokens <int>" in r.stdout  # options that take a value still say what kind
