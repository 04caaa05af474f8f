"""Settings: file < environment < flags (< nothing: generation_config fills the rest)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from qwenchat import config
from qwenchat.config import Settings, load_settings
from qwenchat.errors import ConfigError
from qwenchat.paths import config_file


def _write(text: str) -> Path:
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_nothing_set_gives_all_none() -> None:
    s = load_settings(env={})
    assert s == Settings() and all(v is None for v in s.as_dict(include_unset=True).values())


def test_file_values_are_read_and_normalised() -> None:
    _write('model = "Qwen/Qwen2.5-0.5B-Instruct"\ndevice = "CUDA:1"\ndtype = "bf16"\n'
           'context_limit = 4096\ntheme = "nord"\ntemperature = 0\ntop_p = 0.9\ntop_k = 40\n'
           'min_p = 0.05\nrepetition_penalty = 1.1\nmax_tokens = 512\nseed = 42\n')
    s = load_settings(env={})
    assert s == Settings(model="Qwen/Qwen2.5-0.5B-Instruct", device="cuda:1", dtype="bfloat16",
                         context_limit=4096, theme="nord", temperature=0.0, top_p=0.9, top_k=40,
                         min_p=0.05, repetition_penalty=1.1, max_tokens=512, seed=42)
    assert isinstance(s.temperature, float) and isinstance(s.top_k, int)


def test_precedence_flags_beat_env_beat_file_beat_generation_config() -> None:
    _write('model = "from-file"\ndevice = "cpu"\ntheme = "file-theme"\ntemperature = 0.5\n'
           'dtype = "float32"\n')
    env = {"QWENCHAT_MODEL": "from-env", "QWENCHAT_DEVICE": "cuda", "QWENCHAT_DTYPE": "fp16",
           "QWENCHAT_CONTEXT_LIMIT": "2048", "QWENCHAT_THEME": "", "UNRELATED": "x"}
    s = load_settings(env=env)
    assert (s.model, s.device, s.dtype, s.context_limit) == ("from-env", "cuda", "float16", 2048)
    assert s.theme == "file-theme"  # an empty variable does not override
    assert s.temperature == 0.5
    final = s.merged({"model": "from-flag", "temperature": "0.2", "device": None, "seed": 3})
    assert (final.model, final.temperature, final.device, final.seed) == (
        "from-flag", 0.2, "cuda", 3)
    gen = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
           "max_new_tokens": 256, "do_sample": True, "bos_token_id": 1}
    full = final.with_defaults(gen)
    assert (full.temperature, full.top_p, full.top_k, full.repetition_penalty,
            full.max_tokens) == (0.2, 0.8, 20, 1.05, 256)
    assert Settings(top_p=0.5).with_defaults({"top_p": 7}).top_p == 0.5
    assert Settings().with_defaults({"top_p": 7}).top_p is None  # bad upstream value ignored


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENCHAT_THEME", "dracula")
    assert load_settings().theme == "dracula"


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("device", "gpu", "auto, cpu, cuda, cuda:N or mps"),
        ("device", "cuda:x", "cuda:N"),
        ("dtype", "int8", "bfloat16"),
        ("context_limit", "0", "at least 16"),
        ("context_limit", "10", "at least 16"),  # was stored, then every start failed (found hands-on)
        ("context_limit", "lots", "whole number"),
        ("temperature", "-1", "a number from 0 to 100"),
        ("temperature", "nan", "from 0 to 100"),
        ("temperature", "1e30", "from 0 to 100"),
        ("top_p", "0", "greater than 0 and at most 1"),
        ("top_p", "1.5", "at most 1"),
        ("top_k", "-3", "a whole number from 0 to 1,000,000"),
        ("top_k", "1" + "0" * 30, "from 0 to 1,000,000"),
        ("top_k", "2.5", "whole number"),
        ("min_p", "2", "from 0 to 1"),
        ("repetition_penalty", "0", "a number from 0.01 to 100"),
        ("repetition_penalty", "1e30", "from 0.01 to 100"),
        ("max_tokens", "-1", "a whole number from 1 to 10,000,000"),
        ("seed", "-5", "a whole number from 0 to"),
        ("seed", str(2**64), "from 0 to 18,446,744,073,709,551,615"),
        ("model", "  ", "non-empty"),
        ("theme", "", "non-empty"),
    ],
)
def test_each_invalid_value_names_key_value_and_what_is_allowed(key, value, allowed) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse_value(key, value)
    assert key in err.value.message and repr(value) in err.value.message
    assert allowed in err.value.hint


def test_invalid_value_in_the_file_names_the_file() -> None:
    path = _write("top_k = true\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env={})
    assert "top_k" in err.value.message and str(path) in err.value.message


def test_invalid_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"QWENCHAT_CONTEXT_LIMIT": "-4"})
    assert "QWENCHAT_CONTEXT_LIMIT" in err.value.message and "'-4'" in err.value.message


def test_invalid_flag_value_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        Settings().merged({"top_p": "2"})
    assert "top_p" in err.value.message and "command line" in err.value.message


def test_unknown_key_suggests_the_close_one() -> None:
    path = _write("temprature = 0.3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env={})
    assert "'temprature'" in err.value.message and str(path) in err.value.message
    assert "did you mean 'temperature'" in err.value.hint
    with pytest.raises(ConfigError) as err:
        Settings().merged({"max_token": 5})
    assert "did you mean 'max_tokens'" in err.value.hint
    with pytest.raises(ConfigError) as err:
        config.set_value("zzzz", "1")
    assert "did you mean" not in err.value.hint and "known keys" in err.value.hint


def test_broken_toml_is_a_config_error() -> None:
    path = _write("model = \n")
    with pytest.raises(ConfigError) as err:
        load_settings(env={})
    assert "not valid TOML" in err.value.message and str(path) in err.value.message


def test_set_value_writes_toml_that_reads_back() -> None:
    tricky = 'tricky "quoted" \\ name\n\tx\x01'
    assert config.set_value("theme", tricky) == tricky
    config.set_value("temperature", "0.25")
    config.set_value("dtype", "BF16")
    config.set_value("seed", "7")
    raw = tomllib.loads(config_file().read_text())
    assert raw == {"theme": tricky, "temperature": 0.25,
                   "dtype": "bfloat16", "seed": 7}
    s = load_settings(env={})
    assert (s.theme, s.temperature, s.dtype, s.seed) == (raw["theme"], 0.25, "bfloat16", 7)
    config.set_value("theme", "nord")  # replacing keeps the other keys
    assert load_settings(env={}).temperature == 0.25
    assert config.unset_value("theme") is True and config.unset_value("theme") is False
    assert load_settings(env={}).theme is None


def test_set_value_refuses_invalid_values_and_leaves_the_file_alone() -> None:
    config.set_value("top_k", "10")
    before = config_file().read_text()
    with pytest.raises(ConfigError):
        config.set_value("top_k", "ten")
    assert config_file().read_text() == before


def test_sources_report_where_each_value_comes_from() -> None:
    _write('model = "a"\ntheme = "b"\n')
    found = config.sources(env={"QWENCHAT_MODEL": "c"})
    assert found == {"model": ("c", "QWENCHAT_MODEL"), "theme": ("b", "file")}


def test_a_refused_value_is_named_as_the_caller_labels_it():
    with pytest.raises(ConfigError) as e:
        config.parse_value("max_tokens", "lots", source="settings", name="Max tokens")
    assert e.value.hint.startswith("Max tokens must be ") and "Max tokens (settings)" in e.value.message
    with pytest.raises(ConfigError) as e:
        config.parse_value("max_tokens", "lots", source="settings")
    assert e.value.hint.startswith("max_tokens must be ")
