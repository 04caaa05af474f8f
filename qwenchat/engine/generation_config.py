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
        fields = {k: data.get(k) if data.get(k) is not None else v for k, v in HF_DEFAULTS.items()}
        if not data.get("do_sample", False):
            fields["temperature"] = 0.0  # greedy, as transformers does without do_sample
        max_new = data.get("max_new_tokens")
        return cls(
            sampling=SamplingParams(
                temperature=float(fields["temperature"]),
                top_k=int(fields["top_k"] or 0),
                top_p=float(fields["top_p"]),
                min_p=float(fields["min_p"] or 0.0),
                repetition_penalty=float(fields["repetition_penalty"]),
            ),
            eos_ids=frozenset(eos),
            max_new_tokens=int(max_new) if isinstance(max_new, int) and max_new > 0 else None,
        )


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
