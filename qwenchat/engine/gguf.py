"""Import a Qwen2 GGUF file as an HF-format model directory.

Contract: `import_gguf(gguf_path, out_dir)` reads a GGUF file (llama.cpp's format) whose
`general.architecture` is `qwen2` and writes a directory that both this engine and transformers
load like a Hub repo:

    model.safetensors        tensors under the HF checkpoint names, dequantized, at `dtype`
    config.json              Qwen2 config in the Hub's field layout (rope_theta at the top level)
    tokenizer.json           byte-level BPE built from the GGUF vocabulary and merges
                             (gguf_tokenizer.py)
    tokenizer_config.json    chat template, bos/eos/pad, added_tokens_decoder
    generation_config.json   only what the GGUF states: bos/eos/pad ids
    qwenchat_import.json     the source file, its size and mtime (see `import_is_current`)

The directory is written under a temporary sibling name and renamed into place at the end, so a
half-written import is never loaded; an existing `out_dir` is replaced. The file is parsed by
`gguf_reader` (every count checked against the file's size before anything is allocated); the
`gguf` package only dequantizes. Tensors are dequantized
and written a slice at a time, so peak memory stays near one tensor. Problems a user can act on
raise `ModelConfigError`, `WeightsError` or `TokenizerError`. The module knows nothing about
where imports live or how they are named (that is the CLI's business) and imports nothing else
from qwenchat.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenchat.engine import gguf_reader
from qwenchat.engine.errors import ModelConfigError, WeightsError
from qwenchat.engine.gguf_reader import TensorInfo
from qwenchat.engine.gguf_tokenizer import build_tokenizer_files
from qwenchat.engine.processes import alive, others_leftovers

IMPORT_RECORD = "qwenchat_import.json"
IMPORT_FORMAT_VERSION = 1
DTYPES = ("float32", "bfloat16", "float16")
_IMPORTING = re.compile(r"^\..+\.importing-(?P<pid>\d+)$")  # an import in progress, by its process id

# GGUF tensor name -> HF checkpoint name. `{n}` is the layer index.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}

_SAFETENSORS_DTYPE = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}
_CHUNK_ELEMENTS = 1 << 22  # dequantize ~4M values (16 MB as float32) at a time


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF checkpoint name of a qwen2 GGUF tensor, or None for a name we do not know."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}"
    return None


def import_is_current(gguf_path: Path, out_dir: Path, *, dtype: str | None = None) -> bool:
    """True when `out_dir` is a finished import of this very file (same path, size, mtime)
    and, when given, the same dtype."""
    try:
        record = json.loads((Path(out_dir) / IMPORT_RECORD).read_text())
        st = Path(gguf_path).stat()
    except (OSError, ValueError):
        return False
    return (
        record.get("format_version") == IMPORT_FORMAT_VERSION
        and record.get("source") == str(Path(gguf_path).resolve())
        and record.get("size") == st.st_size
        and record.get("mtime_ns") == st.st_mtime_ns
        and (dtype is None or record.get("dtype") == dtype)
        and (Path(out_dir) / "model.safetensors").is_file()
    )


def read_gguf_fields(gguf_path: Path, keys: set[str]) -> dict[str, Any]:
    """The scalar/string metadata fields named in `keys`, read from the file header without
    the tensor table; stops once all are found."""
    metadata = gguf_reader.read(Path(gguf_path), stop_when=set(keys)).metadata
    return {k: v for k, v in metadata.items() if k in keys and isinstance(v, (str, int, float, bool))}


@dataclass
class _Plan:
    """What one GGUF file will become: metadata and the tensors in writing order."""

    metadata: dict[str, Any]
    tensors: list[tuple[str, TensorInfo]]  # (hf name, its GGUF tensor)
    config: dict[str, Any]


def import_gguf(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype: str = "float32",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Convert a Qwen2 GGUF file into an HF-format model directory at `out_dir`; returns it.

    `progress(done, total)` is called as tensors are written; the units are bytes of the
    output weights file.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if dtype not in DTYPES:
        raise ModelConfigError(f"unsupported dtype {dtype!r}", f"choose one of: {', '.join(DTYPES)}")
    # The header alone names the architecture: refuse other models before parsing the rest.
    arch = read_gguf_fields(gguf_path, {"general.architecture"}).get("general.architecture")
    if arch != "qwen2":
        raise _not_qwen2(gguf_path, arch)
    plan = _plan(gguf_reader.read(gguf_path), gguf_path, dtype)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_imports(out_dir.parent)
    tmp = out_dir.parent / f".{out_dir.name}.importing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_safetensors(tmp / "model.safetensors", plan.tensors, dtype, progress)
        _write_json(tmp / "config.json", plan.config)
        tokenizer, tokenizer_config = build_tokenizer_files(plan.metadata, gguf_path)
        (tmp / "tokenizer.json").write_text(
            json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
        )
        _write_json(tmp / "tokenizer_config.json", tokenizer_config)
        _write_json(tmp / "generation_config.json", _generation_config(plan.metadata))
        st = gguf_path.stat()
        _write_json(
            tmp / IMPORT_RECORD,
            {
                "format_version": IMPORT_FORMAT_VERSION,
                "source": str(gguf_path.resolve()),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "dtype": dtype,
                "name": plan.metadata.get("general.name"),
            },
        )
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def remove_dead_imports(folder: Path) -> None:
    """Delete the half-written imports of processes that are gone (a SIGTERM or SIGKILL mid-import
    leaves a folder the size of the model, and the next import writes under its own pid)."""
    for entry, pid in others_leftovers(folder, _IMPORTING):
        if not alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reading and checking


def _plan(contents: gguf_reader.GGUFContents, gguf_path: Path, dtype: str) -> _Plan:
    from gguf import GGMLQuantizationType
    from gguf.quants import _type_traits

    metadata = contents.metadata
    arch = metadata.get("general.architecture")
    if arch != "qwen2":
        raise _not_qwen2(gguf_path, arch)
    config = _config(metadata, dtype, gguf_path)

    plain = {GGMLQuantizationType.F32, GGMLQuantizationType.F16}
    tensors, unknown = [], []
    for t in contents.tensors:
        name = hf_tensor_name(t.name)
        if name is None:
            unknown.append(t.name)
            continue
        if t.tensor_type not in plain and t.tensor_type not in _type_traits:
            raise WeightsError(
                f"tensor {t.name} is stored as {t.tensor_type.name}, which cannot be dequantized",
                "use a GGUF quantized with a common type (F32, F16, BF16, Q8_0, Q4_K, Q6_K, ...)",
            )
        tensors.append((name, t))
    if unknown:
        raise WeightsError(
            f"{gguf_path.name} has tensors a qwen2 model does not: {', '.join(unknown[:5])}",
            "this GGUF is not a plain Qwen2 causal LM",
        )
    if config["num_hidden_layers"] * len(_LAYER_NAMES) > len(tensors):  # before listing what each needs
        raise WeightsError(
            f"{gguf_path.name} claims {config['num_hidden_layers']:,} layers but holds only {len(tensors)} tensors",
            "the GGUF is incomplete, or its metadata (block_count) is damaged",
        )
    _check_tensors(tensors, config, gguf_path)
    return _Plan(metadata=metadata, tensors=tensors, config=config)


def _not_qwen2(gguf_path: Path, arch: Any) -> ModelConfigError:
    what = f"a {arch!r} model" if arch is not None else "no general.architecture"
    return ModelConfigError(
        f"{gguf_path.name} holds {what}; qwenchat imports only the qwen2 architecture",
        "use a GGUF of a Qwen2 / Qwen2.5 model (general.architecture = qwen2)",
    )


def _required(metadata: dict[str, Any], key: str, gguf_path: Path) -> Any:
    if key not in metadata:
        raise ModelConfigError(f"{gguf_path.name} lacks the metadata field {key}", "the GGUF is incomplete")
    return metadata[key]


_MAX_COUNT = 1 << 24  # no dimension, layer count or context length of a real model is near this


def _count(md: dict[str, Any], key: str, gguf_path: Path, default: int | None = None) -> int:
    """A size field (layers, widths, context): a whole number from 1 to 2**24."""
    value = md.get(key, default) if default is not None else _required(md, key, gguf_path)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_COUNT:
        raise ModelConfigError(
            f"{gguf_path.name}: the metadata field {key} is {value!r}, not a whole number from 1 to {_MAX_COUNT:,}",
            "the GGUF metadata is damaged",
        )
    return value


def _number(md: dict[str, Any], key: str, gguf_path: Path, default: float) -> float:
    value = md.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ModelConfigError(f"{gguf_path.name}: the metadata field {key} is {value!r}, not a positive number",
                               "the GGUF metadata is damaged")
    return float(value)


def token_id(md: dict[str, Any], key: str, gguf_path: Path) -> int | None:
    """tokenizer.ggml.<key> (a token id) as an int, None when absent."""
    value = md.get(f"tokenizer.ggml.{key}")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ModelConfigError(f"{gguf_path.name}: the metadata field tokenizer.ggml.{key} is {value!r}, not a token id",
                               "the GGUF metadata is damaged")
    return value


def _config(md: dict[str, Any], dtype: str, gguf_path: Path) -> dict[str, Any]:
    """config.json in the field layout of the Hub's Qwen2 repos."""
    hidden = _count(md, "qwen2.embedding_length", gguf_path)
    layers = _count(md, "qwen2.block_count", gguf_path)
    heads = _count(md, "qwen2.attention.head_count", gguf_path)
    kv_heads = _count(md, "qwen2.attention.head_count_kv", gguf_path, heads)
    context = _count(md, "qwen2.context_length", gguf_path, 32768)
    if heads <= 0 or hidden % heads or kv_heads <= 0 or heads % kv_heads:
        raise ModelConfigError(
            f"inconsistent attention shape in {gguf_path.name}: hidden {hidden}, heads {heads}, kv heads {kv_heads}",
            "the GGUF metadata is damaged",
        )
    config: dict[str, Any] = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": token_id(md, "bos_token_id", gguf_path),
        "eos_token_id": token_id(md, "eos_token_id", gguf_path),
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": _count(md, "qwen2.feed_forward_length", gguf_path),
        "max_position_embeddings": context,
        "max_window_layers": layers,
        "model_type": "qwen2",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": _number(md, "qwen2.attention.layer_norm_rms_epsilon", gguf_path, 1e-6),
        "rope_theta": _number(md, "qwen2.rope.freq_base", gguf_path, 10000.0),
        "sliding_window": context,
        "tie_word_embeddings": True,  # set from the tensors in _check_tensors
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": None,  # set from the embedding in _check_tensors
    }
    for key in ("padding_token_id", "unknown_token_id"):
        token_id(md, key, gguf_path)  # checked now; written with the tokenizer files
    # Round the float32 epsilon the file stores (9.99999997e-07) back to the value it stands for.
    config["rms_norm_eps"] = float(f"{config['rms_norm_eps']:.6g}")
    scaling = md.get("qwen2.rope.scaling.type")
    if scaling not in (None, "none"):
        factor = _number(md, "qwen2.rope.scaling.factor", gguf_path, 1.0)
        original = md.get("qwen2.rope.scaling.original_context_length")
        if original is not None:
            original = _count(md, "qwen2.rope.scaling.original_context_length", gguf_path)
        config["rope_scaling"] = {"type": scaling, "rope_type": scaling, "factor": factor}
        if original is not None:
            config["rope_scaling"]["original_max_position_embeddings"] = int(original)
    return config


def _check_tensors(tensors: list[tuple[str, Any]], config: dict[str, Any], gguf_path: Path) -> None:
    """Every tensor present, with the shape the config implies; fills vocab_size and tying."""
    shapes = {name: tuple(reversed(t.shape)) for name, t in tensors}
    embed = shapes.get("model.embed_tokens.weight")
    if embed is None:
        raise WeightsError(f"{gguf_path.name} has no token_embd.weight", "the GGUF is incomplete")
    vocab, hidden = embed[0], config["hidden_size"]
    config["vocab_size"] = vocab
    config["tie_word_embeddings"] = "lm_head.weight" not in shapes
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    kv = hidden // heads * kv_heads
    inter = config["intermediate_size"]
    expected = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not config["tie_word_embeddings"]:
        expected["lm_head.weight"] = (vocab, hidden)
    per_layer = {
        "input_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (hidden, hidden),
        "self_attn.q_proj.bias": (hidden,),
        "self_attn.k_proj.weight": (kv, hidden),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, hidden),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (hidden, hidden),
        "post_attention_layernorm.weight": (hidden,),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
    }
    for n in range(config["num_hidden_layers"]):
        for key, shape in per_layer.items():
            expected[f"model.layers.{n}.{key}"] = shape
    missing = [name for name in expected if name not in shapes]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise WeightsError(
            f"{gguf_path.name} lacks {len(missing)} tensor(s) a qwen2 model needs: {', '.join(missing[:5])}{more}",
            "the GGUF is incomplete or not a Qwen2 causal LM",
        )
    extra = [name for name in shapes if name not in expected]
    if extra:
        raise WeightsError(
            f"{gguf_path.name} has tensors beyond its {config['num_hidden_layers']} layers: {', '.join(extra[:5])}",
            "the GGUF metadata (block_count) and its tensors disagree",
        )
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise WeightsError(
                f"tensor {name} has shape {list(shapes[name])}, expected {list(shape)} from the config",
                "the GGUF metadata and its tensors disagree",
            )


# ---------------------------------------------------------------------------------------------
# Writing


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_safetensors(
    path: Path,
    tensors: list[tuple[str, Any]],
    dtype: str,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Write a safetensors file one slice at a time: the header is known from the shapes, so
    no tensor needs to be held whole in memory."""
    st_dtype, itemsize = _SAFETENSORS_DTYPE[dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in tensors:
        nbytes = int(t.n_elements) * itemsize
        shape = list(reversed(t.shape))
        header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    total = offset
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    done = 0
    if progress is not None:
        progress(0, total)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _name, t in tensors:
            for chunk in _dequantized_chunks(t):
                data = _encode(chunk, dtype)
                f.write(data)
                done += len(data)
                if progress is not None:
                    progress(done, total)
    if done != total:  # a bug, not a user error: the header would lie about the data
        raise AssertionError(f"wrote {done} bytes of tensor data, header says {total}")


def _dequantized_chunks(t: Any):
    """float32 arrays holding the tensor's values in row-major order, a few MB at a time."""
    from gguf.quants import dequantize

    ne0 = int(t.shape[0])  # innermost (row length) in GGUF's ne order
    rows = int(t.n_elements) // ne0
    data = t.data.reshape(rows, -1)
    step = max(1, _CHUNK_ELEMENTS // ne0)
    for start in range(0, rows, step):
        values = dequantize(data[start : start + step], t.tensor_type)
        yield values.reshape(-1)


def _encode(values: Any, dtype: str) -> bytes:
    import numpy as np

    if dtype == "float32":
        return np.ascontiguousarray(values, dtype="<f4").tobytes()
    if dtype == "float16":
        return np.ascontiguousarray(values.astype("<f2")).tobytes()
    import torch  # bfloat16: numpy has none; torch rounds to nearest even

    writable = np.array(values, dtype=np.float32)  # a copy: the values may be a read-only memmap
    return torch.from_numpy(writable).to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def _generation_config(md: dict[str, Any]) -> dict[str, Any]:
    """Only what the GGUF states; sampling defaults of the original repo are not in the file."""
    out: dict[str, Any] = {}
    for field, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")):
        value = md.get(f"tokenizer.ggml.{key}")
        if value is not None:
            out[field] = int(value)
    return out
