"""Fixtures for the Hub tests: the fake Hub (tests/hub/fake_hub.py) serving the tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hub.fake_hub import FakeHub, fake_hub  # noqa: F401  (re-exported fixture)

ALIAS_REPO = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture(scope="session")
def sharded_model(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `base` tiny model re-saved as two safetensors shards plus an index, like big repos."""
    from safetensors.numpy import load_file, save_file

    src = tiny_models["base"]
    out = tmp_path_factory.mktemp("sharded")
    for p in src.iterdir():
        if p.name != "model.safetensors":
            (out / p.name).write_bytes(p.read_bytes())
    tensors = load_file(str(src / "model.safetensors"))
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves, start=1):
        shard = f"model-{i:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(out / shard), metadata={"format": "pt"})
        weight_map |= {n: shard for n in part}
    total = sum(t.nbytes for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return out


@pytest.fixture
def hub_with_alias(fake_hub: FakeHub, tiny_models: dict[str, Path]) -> FakeHub:  # noqa: F811
    """The fake Hub serving the default alias's repo (a tiny Qwen2.5-0.5B-Instruct lookalike)."""
    fake_hub.add_repo(ALIAS_REPO, tiny_models["qwen25_05b"])
    return fake_hub
