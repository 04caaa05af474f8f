"""The whole first-run path on real weights: `qwenchat ask -m Qwen/Qwen2.5-0.5B-Instruct` with
HF_ENDPOINT pointed at a fake Hub on 127.0.0.1 downloads, verifies and answers; a second run
works with the server stopped and HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import share_kernels
from tests.hub.fake_hub import fake_hub  # noqa: F401  (fixture)

REPO = "Qwen/Qwen2.5-0.5B-Instruct"
FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")


@pytest.fixture(scope="module")
def hub_style_repo(real_model_dir: Path) -> Path:
    """The imported real model with bf16 weights, as the Hub's Qwen repos ship them."""
    import torch
    from safetensors.torch import load_file, save_file

    out = real_model_dir.parent / "hub-style-bf16"
    if not (out / "model.safetensors").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in FILES[:-1]:
            shutil.copy(real_model_dir / name, tmp / name)
        state = {k: v.to(torch.bfloat16) for k, v in load_file(real_model_dir / "model.safetensors").items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        del state
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def ask(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qwenchat", "ask", *args], capture_output=True, env=env, timeout=600, stdin=subprocess.DEVNULL
    )


def test_first_run_downloads_verifies_answers_then_runs_offline(fake_hub, hub_style_repo, isolated_home):  # noqa: F811
    fake_hub.add_repo(REPO, hub_style_repo)
    share_kernels(isolated_home)  # the int8 kernel built once per test session, not per home
    env = {**os.environ}
    env.pop("HF_HUB_OFFLINE", None)
    question = ["-m", REPO, "What is the capital of France?", "--temperature", "0", "--max-tokens", "24", "--json"]
    first = ask(question, env)
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    assert "Paris" in json.loads(first.stdout)["text"]
    fetched = [path for method, path in fake_hub.requests if method == "GET" and "/resolve/" in path]
    assert any(p.endswith("model.safetensors") for p in fetched)
    assert not any(p.endswith(".bin") for p in fetched)

    offline = {**env, "HF_HUB_OFFLINE": "1"}
    n_requests = len(fake_hub.requests)
    cached = ask(question, offline)  # the server is still up, so a request would be logged
    assert cached.returncode == 0, cached.stderr.decode()[-2000:]
    assert len(fake_hub.requests) == n_requests  # no network at all

    fake_hub.stop()
    second = ask(question, offline)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert json.loads(second.stdout)["text"] == json.loads(first.stdout)["text"]
