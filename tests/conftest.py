"""Shared fixtures: an isolated QWENCHAT_HOME and HF cache for every test, no network by
default, and tiny random Qwen2 models built once per test session.

qwenchat's int8 kernel is compiled once per test session, not once per home: building it costs
about 3.5 s of CPU (a third of a `qwenchat ask` run on a tiny model), and the tests about
building it (tests/engine/test_int8_kernel.py) pass their own folders. In the test process
`paths.kernels_dir` points at the session's folder; a test starting `qwenchat` as a process
links its home's kernel folder there with `share_kernels(home)`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwenchat import paths
from tests.fixtures.tiny import SPECS, build_model, build_tokenizer, never_ending

SHARED_KERNELS_ENV = "QWENCHAT_TEST_KERNELS"  # read by share_kernels in helpers that start processes
# Prompt products stay float32 on every CPU (an AMX one would take its int8 tiles: device.amx_prompts),
# so the tests comparing prompt and decode paths at float32 tolerance mean the same everywhere;
# tests/engine/test_amx_prompts.py forces the matrix units' numerics where it tests them.
os.environ.setdefault("QWENCHAT_AMX_PROMPTS", "0")


def share_kernels(home: Path) -> Path:
    """Make `home`'s kernel folder a link to the session's, so a `qwenchat` process started on
    `home` finds the kernel built (the same file it would build: its name hashes the sources,
    compiler, flags and CPU). Returns `home`."""
    shared = os.environ.get(SHARED_KERNELS_ENV)
    link = home / "cache" / "kernels"
    if shared and not link.exists() and not link.is_symlink():
        link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        link.symlink_to(shared, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def shared_kernels_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8-kernels")  # mode 0700: the kernel's loader checks it


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_kernels_dir: Path) -> Path:
    monkeypatch.setattr(paths, "kernels_dir", lambda: shared_kernels_dir)
    monkeypatch.setenv(SHARED_KERNELS_ENV, str(shared_kernels_dir))
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
def endless_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tiny model, whose greedy replies never stop before their token limit
    (fixtures/tiny.py's never_ending): for tests that act while a reply streams."""
    return never_ending(tiny_model, tmp_path_factory.mktemp("endless") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tokenizer(out)
    return out


@pytest.fixture
def other_process():
    """A live process that is not this one: the "other window" whose pid a message carries."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()
