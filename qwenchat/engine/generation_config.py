"""A model's own generation defaults, read from `generation_config.json`.

Fields the file leaves out take transformers' defaults (temperature 1.0, top_k 50, top_p 1.0,
repetition_penalty 1.0); `do_sample: false` means greedy. The end-of-sequence ids are the union
of what generation_config.json, config.json and the tokenizer name, and generation stops on any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenchat.engine.errors import ModelConfigError
from qwenchat.engine.records import OPTION_RANGES
from qwenchat.engine.sampling import SamplingParams

HF_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class GenerationDefaults:
    sampling: SamplingParams
    eos_ids: frozenset[int]
    max_new_tokens: int | None = None

    @classmethod
    def from_dir(cls, model_dir: Path, extra_eos: tuple[int | None, ...] = ()) -> "GenerationDefaults":
        data = _read(model_dir / "generation_config.json")
        config = _read(model_dir / "config.json")
        eos = _ids(data.get("eos_token_id")) | _ids(config.get("eos_token_id"))
        eos |= {i for i in extra_eos if i is not None}
        fields = {k: _usable(k, data.get(k), v) for k, v in HF_DEFAULTS.items()}
        if not data.get("do_sample", False):
            fields["temperature"] = 0.0  # greedy, as transformers does without do_sample
        max_new = data.get("max_new_tokens")
        return cls(
            sampling=SamplingParams(**fields),
            eos_ids=frozenset(eos),
            max_new_tokens=int(max_new) if isinstance(max_new, int) and max_new > 0 else None,
        )


def _usable(name: str, value: Any, default: float) -> float:
    """The model's default for `name` when it is a number within the option's range; a value
    that is missing, of the wrong type or out of range (a typo in someone's upload) gives way
    to transformers' default rather than making every request fail."""
    allowed = OPTION_RANGES[name]
    if isinstance(value, float) and allowed.integer and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and not allowed.integer:
        value = float(value)
    return value if value in allowed else default


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelConfigError(f"{path} is not valid JSON ({e})", "re-download the model") from e
    return data if isinstance(data, dict) else {}


def _ids(value: Any) -> set[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, int)}
    return set()
