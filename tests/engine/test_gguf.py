"""GGUF import on tiny GGUF files written here with gguf.GGUFWriter: tensor names, shapes and
(dequantized) values, config/tokenizer/generation files, refusals, and the `import` command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize

from qwenchat.engine.errors import ModelConfigError, WeightsError
from qwenchat.engine.gguf import (
    IMPORT_RECORD,
    hf_tensor_name,
    import_gguf,
    import_is_current,
    read_gguf_fields,
)
from tests.fixtures.tiny import QWEN2_5_TEMPLATE

HIDDEN, HEADS, KV_HEADS, INTER, LAYERS = 64, 4, 2, 96, 2
KV = HIDDEN // HEADS * KV_HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # token type 3 (control)
PLAIN_ADDED = ["<tool_call>", "</tool_call>"]  # token type 4 (user defined)
# A type per weight, cycling, so every kind of tensor meets several encodings.
WEIGHT_TYPES = [Q.Q8_0, Q.F16, Q.Q4_0, Q.BF16, Q.Q5_0, Q.F32, Q.Q5_1, Q.Q4_1]


def _byte_alphabet() -> list[str]:
    from qwenchat.engine.gguf_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def tiny_vocab() -> tuple[list[str], list[str], list[int]]:
    tokens = _byte_alphabet()
    merges = ["h e", "l l", "he ll", "Ġ w", "o r", "Ġw or"]
    tokens += ["he", "ll", "hell", "Ġw", "or", "Ġwor"]
    types = [1] * len(tokens)
    tokens += SPECIALS + PLAIN_ADDED + ["[PAD1]"]
    types += [3] * len(SPECIALS) + [4] * len(PLAIN_ADDED) + [5]
    return tokens, merges, types


def _encode(values: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return values.astype(np.float32)
    if qtype == Q.F16:
        return values.astype(np.float16)
    return quantize(values, qtype)


def write_gguf(
    path: Path,
    *,
    arch: str = "qwen2",
    tied: bool = False,
    drop: tuple[str, ...] = (),
    override: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a tiny qwen2 GGUF; returns {hf name: float32 values as stored (dequantized)}."""
    rng = np.random.default_rng(seed)
    tokens, merges, types = tiny_vocab()
    vocab = len(tokens)
    w = GGUFWriter(str(path), arch)
    w.add_name("Tiny Qwen2 Test 0.1B")
    w.add_block_count(LAYERS)
    w.add_context_length(4096)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(QWEN2_5_TEMPLATE)

    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab, HIDDEN),
        "output_norm.weight": (HIDDEN,),
    }
    if not tied:
        shapes["output.weight"] = (vocab, HIDDEN)
    for n in range(LAYERS):
        b = f"blk.{n}."
        shapes.update({
            b + "attn_norm.weight": (HIDDEN,),
            b + "attn_q.weight": (HIDDEN, HIDDEN), b + "attn_q.bias": (HIDDEN,),
            b + "attn_k.weight": (KV, HIDDEN), b + "attn_k.bias": (KV,),
            b + "attn_v.weight": (KV, HIDDEN), b + "attn_v.bias": (KV,),
            b + "attn_output.weight": (HIDDEN, HIDDEN),
            b + "ffn_norm.weight": (HIDDEN,),
            b + "ffn_gate.weight": (INTER, HIDDEN), b + "ffn_up.weight": (INTER, HIDDEN),
            b + "ffn_down.weight": (HIDDEN, INTER),
        })
    expected: dict[str, np.ndarray] = {}
    k = 0
    for name, shape in shapes.items():
        if name in drop:
            continue
        if override and name in override:
            w.add_tensor(name, override[name])
            continue
        if len(shape) == 1:  # norms and biases stay F32, as llama.cpp writes them
            values = (rng.uniform(0.5, 1.5, shape) if "norm" in name else rng.normal(0, 0.5, shape)).astype(np.float32)
            qtype = Q.F32
        else:
            values = rng.normal(0, 0.08, shape).astype(np.float32)
            qtype = WEIGHT_TYPES[k % len(WEIGHT_TYPES)]
            k += 1
        data = _encode(values, qtype)
        if qtype in (Q.F32, Q.F16):
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qtype)
        stored = dequantize(data, qtype).reshape(shape).astype(np.float32)
        expected[hf_tensor_name(name)] = stored
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


@pytest.fixture(scope="module")
def untied_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("gguf") / "tiny-untied.gguf"
    return path, write_gguf(path)


@pytest.fixture(scope="module")
def untied_import(untied_gguf, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_gguf(untied_gguf[0], tmp_path_factory.mktemp("imports") / "untied")


def _load(dir_: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(dir_ / "model.safetensors"))


def test_tensors_are_renamed_reshaped_and_dequantized(untied_gguf, untied_import: Path) -> None:
    _, expected = untied_gguf
    got = _load(untied_import)
    assert set(got) == set(expected)
    assert "lm_head.weight" in got and "model.layers.1.self_attn.k_proj.bias" in got
    for name, values in expected.items():
        assert got[name].dtype == np.float32
        assert got[name].shape == values.shape, name
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert got["model.layers.0.self_attn.k_proj.weight"].shape == (KV, HIDDEN)
    assert got["model.layers.0.mlp.down_proj.weight"].shape == (HIDDEN, INTER)


def test_config_and_generation_config(untied_import: Path) -> None:
    tokens, _, _ = tiny_vocab()
    config = json.loads((untied_import / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["hidden_size"] == HIDDEN and config["intermediate_size"] == INTER
    assert config["num_hidden_layers"] == LAYERS
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (HEADS, KV_HEADS)
    assert config["rope_theta"] == 1e6 and config["rms_norm_eps"] == 1e-6
    assert config["vocab_size"] == len(tokens) and config["max_position_embeddings"] == 4096
    assert config["tie_word_embeddings"] is False and config["torch_dtype"] == "float32"
    assert config["eos_token_id"] == tokens.index("<|im_end|>")
    gen = json.loads((untied_import / "generation_config.json").read_text())
    eot = tokens.index("<|endoftext|>")
    assert gen == {"bos_token_id": eot, "eos_token_id": tokens.index("<|im_end|>"), "pad_token_id": eot}


def test_tokenizer_files(untied_import: Path) -> None:
    from tokenizers import Tokenizer

    tokens, _, _ = tiny_vocab()
    tok = Tokenizer.from_file(str(untied_import / "tokenizer.json"))
    ids = tok.encode("<|im_start|>hello world<tool_call><|im_end|>", add_special_tokens=False).ids
    names = [tokens[i] for i in ids]
    assert names == ["<|im_start|>", "hell", "o", "Ġwor", "l", "d", "<tool_call>", "<|im_end|>"]
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>hello world<tool_call><|im_end|>"
    assert tok.decode(ids, skip_special_tokens=True) == "hello world<tool_call>"
    assert tok.encode("héllo 日本", add_special_tokens=False).ids  # bytes fall back to the alphabet
    assert tok.decode(tok.encode("héllo 日本\n\t x").ids) == "héllo 日本\n\t x"
    # NFC first, like the Hub's Qwen2 tokenizer.json.
    assert tok.encode("e\u0301").ids == tok.encode("\u00e9").ids

    cfg = json.loads((untied_import / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == QWEN2_5_TEMPLATE
    assert cfg["add_bos_token"] is False
    assert (cfg["eos_token"], cfg["pad_token"], cfg["bos_token"]) == ("<|im_end|>", "<|endoftext|>", "<|endoftext|>")
    decoder = {v["content"]: v["special"] for v in cfg["added_tokens_decoder"].values()}
    assert decoder == {**{t: True for t in SPECIALS}, **{t: False for t in PLAIN_ADDED}}
    assert cfg["added_tokens_decoder"][str(tokens.index("<|im_end|>"))]["content"] == "<|im_end|>"


def test_import_record_and_currency(untied_gguf, tmp_path: Path) -> None:
    src = tmp_path / "copy.gguf"
    src.write_bytes(untied_gguf[0].read_bytes())
    calls: list[tuple[int, int]] = []
    out = import_gguf(src, tmp_path / "models" / "m", progress=lambda d, t: calls.append((d, t)))
    record = json.loads((out / IMPORT_RECORD).read_text())
    assert record["source"] == str(src.resolve()) and record["size"] == src.stat().st_size
    assert record["mtime_ns"] == src.stat().st_mtime_ns and record["dtype"] == "float32"
    assert import_is_current(src, out) and import_is_current(src, out, dtype="float32")
    assert not import_is_current(src, out, dtype="bfloat16")
    # Progress: from 0 up to the total, never backwards.
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    # Nothing half-written is left beside the import.
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not import_is_current(src, out)
    # Importing again replaces the directory in place.
    (out / "stale.txt").write_text("x")
    import_gguf(src, out)
    assert not (out / "stale.txt").exists() and import_is_current(src, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]


def test_tied_embeddings(tmp_path: Path) -> None:
    expected = write_gguf(tmp_path / "tied.gguf", tied=True, seed=1)
    out = import_gguf(tmp_path / "tied.gguf", tmp_path / "tied")
    got = _load(out)
    assert "lm_head.weight" not in got and set(got) == set(expected)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_dtypes(untied_gguf, tmp_path: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import load_file

    _, expected = untied_gguf
    out = import_gguf(untied_gguf[0], tmp_path / dtype, dtype=dtype)
    got = load_file(str(out / "model.safetensors"))
    want_dtype = getattr(torch, dtype)
    for name, values in expected.items():
        assert got[name].dtype == want_dtype
        torch.testing.assert_close(got[name], torch.from_numpy(values).to(want_dtype), rtol=0, atol=0)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == dtype


def test_transformers_loads_the_import_like_the_gguf(untied_gguf, untied_import: Path) -> None:
    """transformers reading the GGUF itself and reading our import must compute the same logits:
    an independent check of the name map and the tensor orientation (q/k are not permuted)."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_path = untied_gguf[0]
    ref = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(str(untied_import), dtype=torch.float32)
    ids = torch.tensor([[5, 70, 200, 257, 3, 99, 260, 1]])
    with torch.inference_mode():
        torch.testing.assert_close(ours(ids).logits, ref.eval()(ids).logits, rtol=0, atol=1e-5)


def test_read_gguf_fields_reads_only_the_header(untied_gguf) -> None:
    fields = read_gguf_fields(untied_gguf[0], {"general.name", "qwen2.block_count"})
    assert fields == {"general.name": "Tiny Qwen2 Test 0.1B", "qwen2.block_count": LAYERS}


# --------------------------------------------------------------------------- refusals


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    write_gguf(tmp_path / "llama.gguf", arch="llama")
    with pytest.raises(ModelConfigError, match="'llama'") as err:
        import_gguf(tmp_path / "llama.gguf", tmp_path / "out")
    assert "qwen2" in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep", [0.5, 0.999, 100])
def test_truncated_file_is_refused(untied_gguf, tmp_path: Path, keep: float) -> None:
    data = untied_gguf[0].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    with pytest.raises(WeightsError, match="truncated"):
        import_gguf(cut, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [cut]  # no temporary directory left behind
    if keep == 100:  # the metadata itself is cut: the header reader refuses too
        with pytest.raises(WeightsError, match="truncated"):
            read_gguf_fields(cut, {"general.name", "no.such.key"})


def test_not_a_gguf_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_text("{ this is not a gguf }")
    with pytest.raises(WeightsError, match="not a GGUF"):
        import_gguf(bogus, tmp_path / "out")
    with pytest.raises(WeightsError, match="no such file"):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "out")


def test_undequantizable_tensor_type_is_refused(tmp_path: Path) -> None:
    ints = np.zeros((KV,), dtype=np.int32)
    write_gguf(tmp_path / "int.gguf", override={"blk.1.attn_k.bias": ints})
    with pytest.raises(WeightsError, match=r"blk\.1\.attn_k\.bias.*I32"):
        import_gguf(tmp_path / "int.gguf", tmp_path / "out")


def test_missing_tensor_is_refused(tmp_path: Path) -> None:
    write_gguf(tmp_path / "holes.gguf", drop=("blk.1.ffn_up.weight",))
    with pytest.raises(WeightsError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        import_gguf(tmp_path / "holes.gguf", tmp_path / "out")


def test_failed_import_keeps_the_previous_one(untied_gguf, tmp_path: Path) -> None:
    out = import_gguf(untied_gguf[0], tmp_path / "m")
    write_gguf(tmp_path / "holes.gguf", drop=("output_norm.weight",))
    with pytest.raises(WeightsError):
        import_gguf(tmp_path / "holes.gguf", out)
    assert import_is_current(untied_gguf[0], out)


# --------------------------------------------------------------------------- the CLI


def test_cli_import_end_to_end(untied_gguf, capsys: pytest.CaptureFixture[str]) -> None:
    from qwenchat.cli import run
    from qwenchat.paths import imported_models_dir

    src = untied_gguf[0]
    assert run(["import", str(src)]) == 0
    out = capsys.readouterr().out
    target = imported_models_dir() / "tiny-qwen2-test-0.1b"
    assert str(target) in out and "qwenchat ask -m tiny-qwen2-test-0.1b" in out
    assert import_is_current(src, target)
    np.testing.assert_array_equal(_load(target)["lm_head.weight"], untied_gguf[1]["lm_head.weight"])

    assert run(["import", str(src)]) == 1  # refuses to overwrite
    err = capsys.readouterr().err
    assert "already imported" in err and "--force" in err
    assert run(["import", str(src), "--force"]) == 0
    capsys.readouterr()

    assert run(["import", str(src), "--name", "mine", "--dtype", "bfloat16"]) == 0
    cfg = json.loads((imported_models_dir() / "mine" / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    capsys.readouterr()


def test_cli_import_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qwenchat.cli import run

    assert run(["import", str(tmp_path / "nope.gguf")]) == 2
    assert "no such file" in capsys.readouterr().err
    write_gguf(tmp_path / "llama.gguf", arch="llama")
    assert run(["import", str(tmp_path / "llama.gguf"), "--dtype", "int8"]) == 2
    assert "--dtype" in capsys.readouterr().err
    assert run(["import", str(tmp_path / "llama.gguf"), "--name", "../escape"]) == 2
    capsys.readouterr()
    assert run(["import", str(tmp_path / "llama.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'llama'" in err and "Traceback" not in err


def test_an_import_killed_midway_is_cleaned_up_by_the_next(untied_gguf, tmp_path: Path) -> None:
    """A SIGTERM or SIGKILL mid-import left `.NAME.importing-PID` (the model's size: 1.1 GB seen)
    that nothing removed; a live process's import in progress must stay."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".other.importing-{int(dead.stdout)}"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"x" * 1000)
    running = tmp_path / f".busy.importing-{os.getppid()}"  # our parent: alive
    running.mkdir()
    import_gguf(untied_gguf[0], tmp_path / "m")
    assert not killed.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".busy.importing-" + str(os.getppid()), "m"]
