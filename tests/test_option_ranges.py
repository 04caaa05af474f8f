"""The generation options' ranges (issue 12, item 18): declared once (engine.records), every
generation key of the config layer checked from that declaration, values beyond them are refused by config, settings dialog and engine alike, and on
the command line they are a usage error (exit 2) naming the option and its range."""

from __future__ import annotations

import re

import pytest

from qwenchat import config
from qwenchat.engine.errors import SettingsError
from qwenchat.engine.records import OPTION_RANGES
from qwenchat.engine.sampling import SamplingParams
from qwenchat.errors import ConfigError
from tests.cli.inprocess import run_cli

ENGINE_NAME = {"max_tokens": "max_new_tokens"}  # config key -> engine option, where they differ


def test_every_option_has_a_config_key_checked_by_its_declaration():
    assert {ENGINE_NAME.get(k, k) for k in config.GENERATION_KEYS} == set(OPTION_RANGES)
    for key in config.GENERATION_KEYS:
        allowed = OPTION_RANGES[ENGINE_NAME.get(key, key)]
        with pytest.raises(ConfigError, match=re.escape(allowed.describe())):
            config.parse_value(key, str(allowed.high * 10))


PROBES = [0, 1e-9, 0.005, 0.01, 0.5, 1, 2, 99.5, 100, 100.5, 1e30, -1, 1_000_000, 1_000_001, 2**64 - 1, 2**64]


@pytest.mark.parametrize("key", ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed"])
def test_config_and_engine_accept_the_same_values(key):
    for value in PROBES:
        if isinstance(value, float) and key in ("top_k", "seed"):
            continue  # whole-number options: config parses text, the engine takes ints only
        try:
            config.parse_value(key, str(value))
            by_config = True
        except ConfigError:
            by_config = False
        try:
            SamplingParams(**{key: value}).validate()
            by_engine = True
        except SettingsError:
            by_engine = False
        assert by_config == by_engine, (key, value, by_config, by_engine)


def test_settings_dialog_refuses_out_of_range_values():
    from qwenchat.tui.screens.settings import check

    value, problem = check("temperature", "1e30")
    assert value is None and "from 0 to 100" in problem
    assert check("temperature", "1e-30") == (1e-30, None)


@pytest.mark.parametrize(
    "flag,value,expected",
    [
        ("--temperature", "1e30", "temperature must be a number from 0 to 100"),
        ("--repetition-penalty", "0", "repetition_penalty must be a number from 0.01 to 100"),
        ("--top-k", "1" + "0" * 30, "top_k must be a whole number from 0 to 1,000,000"),
        ("--seed", str(2**64), "seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
        # not even a number: the value and the range, not typer's "Input should be a valid number"
        ("--temperature", "abc", "'abc': temperature must be a number from 0 to 100"),
        ("--max-tokens", "1.5", "'1.5': max_tokens must be a whole number from 1 to 10,000,000"),
    ],
)
def test_out_of_range_flag_is_a_usage_error(flag, value, expected, tmp_path):
    out = run_cli(["ask", "-n", flag, value, "hi"], tmp_path)  # in this process: no torch import to wait for
    assert out.returncode == 2, out.stderr
    stderr = out.stderr.decode()
    assert expected in " ".join(stderr.split())
    assert "Traceback" not in stderr
