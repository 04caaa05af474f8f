"""Reading Qwen2 weights from safetensors files: one `model.safetensors`, or shards listed in
`model.safetensors.index.json`.

Tensors are memory-mapped and cast to the compute dtype one at a time. Every expected tensor must
be present with the shape the config implies, and nothing unexpected may be left over, so a
damaged or mismatched download fails here with the file and tensor named, not later as garbage
text. Pickled `.bin` checkpoints are refused: loading them can run arbitrary code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.errors import WeightsError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
REDOWNLOAD = "the file is damaged or incomplete; re-download the model (qwenchat pull MODEL)"


def expected_shapes(cfg: Qwen2Config) -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> shape, for every tensor a Qwen2 checkpoint of this config must hold."""
    h, d, i = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, h)}
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, q),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        }
    shapes["model.norm.weight"] = (h,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, h)
    return shapes


def weight_files(model_dir: Path) -> dict[str, Path]:
    """Checkpoint key -> the safetensors file holding it."""
    index = model_dir / INDEX_FILE
    if index.is_file():
        return _from_index(index)
    single = model_dir / SINGLE_FILE
    if single.is_file():
        return {key: single for key in _keys(single)}
    shards = sorted(model_dir.glob("*.safetensors"))
    if shards:
        return {key: shard for shard in shards for key in _keys(shard)}
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")) or any(model_dir.glob("*.pth")):
        raise WeightsError(
            f"{model_dir} has only pickled PyTorch weights (.bin/.pt); qwenchat loads safetensors only,"
            " because unpickling a checkpoint can run arbitrary code",
            "use a repo that ships model.safetensors (all official Qwen2/Qwen2.5 repos do)",
        )
    raise WeightsError(f"no model.safetensors in {model_dir}", "download the model again (qwenchat pull MODEL)")


def load_state_dict(model_dir: Path, cfg: Qwen2Config, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, validated and cast to `dtype` (on the CPU)."""
    from safetensors import safe_open

    files = weight_files(model_dir)
    shapes = expected_shapes(cfg)
    if cfg.tie_word_embeddings:
        files.pop("lm_head.weight", None)  # some tied checkpoints still carry a copy; unused
    _check_names(model_dir, files, shapes)
    state: dict[str, torch.Tensor] = {}
    for path in sorted(set(files.values())):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in (k for k, p in files.items() if p == path):
                    tensor = f.get_tensor(key)
                    if tuple(tensor.shape) != shapes[key]:
                        raise WeightsError(
                            f"{path.name}: tensor {key} has shape {tuple(tensor.shape)}, "
                            f"but config.json implies {shapes[key]}",
                            "config.json and the weights come from different models; re-download",
                        )
                    state[key] = tensor.to(dtype)
        except WeightsError:
            raise
        except Exception as e:  # safetensors raises its own error type for truncated files
            raise WeightsError(f"cannot read {path}: {e}", REDOWNLOAD) from e
    return state


def _from_index(index: Path) -> dict[str, Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{index} is not a valid safetensors index ({e})", REDOWNLOAD) from e
    files = {key: index.parent / name for key, name in weight_map.items()}
    for path in sorted(set(files.values())):
        if not path.is_file():
            raise WeightsError(f"{path.name} is listed in {index.name} but missing", REDOWNLOAD)
    return files


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as e:
        raise WeightsError(f"cannot read {path}: {e}", REDOWNLOAD) from e


def _check_names(model_dir: Path, files: dict[str, Path], shapes: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(shapes) - set(files))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{model_dir}: tensor {missing[0]} is missing{more}", REDOWNLOAD)
    unexpected = sorted(set(files) - set(shapes))
    if unexpected:
        raise WeightsError(
            f"{files[unexpected[0]].name}: unexpected tensor {unexpected[0]}"
            f" ({len(unexpected)} in all); this is not a plain Qwen2 checkpoint",
            "quantized or adapter checkpoints are not supported; use the original safetensors repo",
        )
