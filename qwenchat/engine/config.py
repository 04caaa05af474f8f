"""Qwen2 model configuration, parsed from an HF `config.json`.

Field names are the upstream ones, unchanged; derived values (head_dim) are computed here and
nowhere else. Anything we do not implement is refused with an error naming the field and value,
rather than silently producing a different model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenchat.engine.errors import ModelConfigError

SUPPORTED_ROPE_TYPES = {"default"}


@dataclass(frozen=True)
class Qwen2Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    head_dim: int
    torch_dtype: str | None = None

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (GQA)."""
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_file(cls, path: Path) -> "Qwen2Config":
        if not path.is_file():
            raise ModelConfigError(
                f"{path} not found",
                "a model directory needs config.json next to its .safetensors files",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelConfigError(f"{path} is not valid JSON ({e})", "re-download the model") from e
        if not isinstance(data, dict):
            raise ModelConfigError(f"{path} does not hold a JSON object", "re-download the model")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config.json") -> "Qwen2Config":
        model_type = data.get("model_type")
        if model_type != "qwen2":
            raise ModelConfigError(
                f"{source}: model_type is {model_type!r}; qwenchat runs only model_type 'qwen2'",
                "choose a Qwen2 / Qwen2.5 model, e.g. qwen2.5-0.5b-instruct",
            )
        _check_attention(data, source)
        rope_theta = _rope_theta(data, source)
        hidden = _int(data, "hidden_size", source)
        heads = _int(data, "num_attention_heads", source)
        kv_heads = int(data.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise ModelConfigError(
                f"{source}: num_attention_heads={heads} is not a multiple of "
                f"num_key_value_heads={kv_heads}",
                "the file is damaged or not a Qwen2 model",
            )
        head_dim = int(data.get("head_dim") or hidden // heads)
        return cls(
            vocab_size=_int(data, "vocab_size", source),
            hidden_size=hidden,
            intermediate_size=_int(data, "intermediate_size", source),
            num_hidden_layers=_int(data, "num_hidden_layers", source),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=int(data.get("max_position_embeddings", 32768)),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            head_dim=head_dim,
            torch_dtype=data.get("torch_dtype") or data.get("dtype"),
        )


def _int(data: dict[str, Any], key: str, source: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelConfigError(
            f"{source}: {key} is {value!r}; expected a positive integer",
            "the file is damaged or incomplete; re-download the model",
        )
    return value


def _rope_theta(data: dict[str, Any], source: str) -> float:
    # Hub repos write rope_theta/rope_scaling; transformers 5 saves rope_parameters instead.
    params = data.get("rope_parameters") or {}
    scaling = data.get("rope_scaling") or {}
    for field, section in (("rope_scaling", scaling), ("rope_parameters", params)):
        if not isinstance(section, dict):
            raise ModelConfigError(f"{source}: {field} is {section!r}; expected an object")
        rope_type = section.get("rope_type", section.get("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ModelConfigError(
                f"{source}: {field}.rope_type is {rope_type!r}; qwenchat implements only plain RoPE",
                "use the model without RoPE scaling (remove rope_scaling to run at the trained context)",
            )
    return float(params.get("rope_theta") or data.get("rope_theta") or 10000.0)


def _check_attention(data: dict[str, Any], source: str) -> None:
    if data.get("use_sliding_window"):
        raise ModelConfigError(
            f"{source}: use_sliding_window is true; qwenchat implements full attention only",
            "set use_sliding_window to false (the Qwen2 seed models do)",
        )
    act = data.get("hidden_act", "silu")
    if act != "silu":
        raise ModelConfigError(f"{source}: hidden_act is {act!r}; Qwen2 uses 'silu'")
