"""Shared fixtures: an isolated QWENCHAT_HOME and HF cache for every test, no network by
default, and tiny random Qwen2 models built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.tiny import SPECS, build_model, build_tokenizer


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "qwenchat-home"
    monkeypatch.setenv("QWENCHAT_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("QWENCHAT_MODEL", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny model variant, by spec name (see tests/fixtures/tiny.py)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: build_model(root / name, spec) for name, spec in SPECS.items()}


@pytest.fixture(scope="session")
def tiny_model(tiny_models: dict[str, Path]) -> Path:
    """The default tiny model: shaped like Qwen2.5-0.5B-Instruct."""
    return tiny_models["qwen25_05b"]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tokenizer(out)
    return out
