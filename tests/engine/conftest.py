"""Engine test helpers: load our model and transformers' on the same tiny checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwenchat.engine.cache import KVCache
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.model import Qwen2ForCausalLM
from qwenchat.engine.model_build import from_state_dict
from qwenchat.engine.weights import load_state_dict


def load_ours(model_dir: Path, max_len: int = 1024) -> tuple[Qwen2ForCausalLM, Qwen2Config]:
    cfg = Qwen2Config.from_file(model_dir / "config.json")
    model = from_state_dict(cfg, load_state_dict(model_dir, cfg, torch.float32), torch.device("cpu"), max_len)
    return model, cfg


def new_cache(cfg: Qwen2Config, max_len: int = 1024) -> KVCache:
    return KVCache(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, max_len, torch.float32, torch.device("cpu"))


@pytest.fixture(scope="session")
def reference_models(tiny_models: dict[str, Path]):
    """transformers' Qwen2ForCausalLM on each tiny checkpoint, fp32, eval mode."""
    from transformers import AutoModelForCausalLM

    return {
        name: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        for name, path in tiny_models.items()
    }
