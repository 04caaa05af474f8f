"""The remote-server settings: `api_key` (a secret: never shown in full, never in a repr, the file
holding it private) and `request_timeout` (seconds to the first token, > 0)."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from qwenchat import config
from qwenchat.cli import run
from qwenchat.errors import ConfigError
from qwenchat.paths import config_file

KEY = "sk-test-0123456789abcdef"


def test_request_timeout_must_be_positive_seconds() -> None:
    assert config.parse_value("request_timeout", "2.5") == 2.5
    assert config.parse_value("request_timeout", 30) == 30.0
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ConfigError, match="request_timeout must be a number of seconds greater than 0"):
            config.parse_value("request_timeout", bad)


def test_an_empty_api_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="api_key"):
        config.parse_value("api_key", "  ")


def test_the_key_is_not_in_the_settings_repr() -> None:
    settings = config.Settings(model="http://gpu-box:8000/v1", api_key=KEY)
    assert KEY not in repr(settings)
    assert settings.merged({"api_key": "other-key-456"}).api_key == "other-key-456"


def test_the_key_is_read_from_the_file_not_from_the_environment(monkeypatch) -> None:
    # QWENCHAT_API_KEY ranks below the config file (qwenchat.remote reads it), so it is no
    # environment layer of the settings
    monkeypatch.setenv("QWENCHAT_API_KEY", "from-env")
    assert config.load_settings().api_key is None
    config.set_value("api_key", KEY)
    assert config.load_settings().api_key == KEY


def test_shown_masks_only_secrets() -> None:
    assert config.shown("api_key", KEY) == "****cdef"
    assert config.shown("api_key", "short") == "****"
    assert config.shown("theme", "nord") == "nord"


def test_config_commands_never_print_the_key(capsys) -> None:
    assert run(["config", "set", "api_key", KEY]) == 0
    assert run(["config", "show"]) == 0
    assert run(["config", "get", "api_key"]) == 0
    out = capsys.readouterr()
    assert KEY not in out.out + out.err
    assert 'api_key = "****cdef"  # config file' in out.out
    assert tomllib.loads(config_file().read_text())["api_key"] == KEY  # stored whole


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_config_file_holding_a_key_is_private() -> None:
    config.set_value("api_key", KEY)
    assert stat.S_IMODE(config_file().stat().st_mode) == 0o600
