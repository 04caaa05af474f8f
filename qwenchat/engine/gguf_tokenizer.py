"""The tokenizer files of a GGUF import: tokenizer.json and tokenizer_config.json rebuilt from the
byte-level BPE vocabulary, merges and token types a GGUF carries in its `tokenizer.ggml.*`
metadata. gguf.py writes them; this module only turns metadata into the two JSON objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qwenchat.engine.errors import TokenizerError

# The Qwen2 pre-tokenizer split (byte-level), as in the Hub's tokenizer.json and transformers.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` values that name the Qwen2 split (llama.cpp's names).
QWEN2_PRE_TOKENIZERS = frozenset({"qwen2", "deepseek-r1-qwen"})

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _added_token(token_id: int, content: str, special: bool) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def build_tokenizer_files(md: dict[str, Any], gguf_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tokenizer.json, tokenizer_config.json) contents for the GGUF's byte-level BPE tokenizer.

    The vocabulary, merges and added tokens follow transformers' own GGUF conversion (every GGUF
    token in the BPE vocabulary; control tokens added as special, user-defined ones such as
    `<tool_call>` as plain added tokens); the normalizer, pre-tokenizer and decoder follow the
    Hub's Qwen2 tokenizer.json (NFC, the Qwen2 split, ByteLevel without a prefix space).
    """
    model = md.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise TokenizerError(
            f"{gguf_path.name} uses a {model!r} tokenizer; Qwen2 models use byte-level BPE ('gpt2')",
            "use a GGUF of a Qwen2 / Qwen2.5 model",
        )
    pre = md.get("tokenizer.ggml.pre")
    if pre not in QWEN2_PRE_TOKENIZERS:
        raise TokenizerError(
            f"{gguf_path.name} names the pre-tokenizer {pre!r}, not Qwen2's",
            f"qwenchat knows: {', '.join(sorted(QWEN2_PRE_TOKENIZERS))}",
        )
    tokens = _texts(md, "tokenizer.ggml.tokens", gguf_path)
    merges_raw = _texts(md, "tokenizer.ggml.merges", gguf_path)
    token_types = _numbers(md, "tokenizer.ggml.token_type", gguf_path)

    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        key = tok if set(tok) <= alphabet else "".join(spelling[b] for b in tok.encode("utf-8"))
        vocab[key] = i
    merges = [m.split(" ", 1) for m in merges_raw]

    added: dict[int, dict[str, Any]] = {}
    for tok, ttype in zip(tokens, token_types):
        if ttype == TOKEN_TYPE_CONTROL and set(tok) <= alphabet:
            added[vocab[tok]] = _added_token(vocab[tok], tok, True)
    for tok, ttype in zip(tokens, token_types):
        if ttype == TOKEN_TYPE_USER_DEFINED and tok in vocab and vocab[tok] not in added:
            added[vocab[tok]] = _added_token(vocab[tok], tok, False)
    added_tokens = [added[i] for i in sorted(added)]

    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }

    def token_at(key: str) -> str | None:
        i = md.get(f"tokenizer.ggml.{key}")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    tokenizer_config: dict[str, Any] = {
        "add_bos_token": md.get("tokenizer.ggml.add_bos_token") is True,
        "add_eos_token": md.get("tokenizer.ggml.add_eos_token") is True,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added_tokens
        },
        "bos_token": token_at("bos_token_id"),
        "clean_up_tokenization_spaces": False,
        "eos_token": token_at("eos_token_id"),
        "errors": "replace",
        "model_max_length": int(md.get("qwen2.context_length", 32768)),
        "pad_token": token_at("padding_token_id"),
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": token_at("unknown_token_id"),
    }
    template = md.get("tokenizer.chat_template")
    if template and isinstance(template, str):
        tokenizer_config["chat_template"] = template
    return tokenizer, tokenizer_config


def _texts(md: dict[str, Any], key: str, gguf_path: Path) -> list[str]:
    value = _required(md, key, gguf_path)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenizerError(f"{gguf_path.name}: the metadata field {key} is not a list of strings",
                             "the GGUF metadata is damaged")
    return value


def _numbers(md: dict[str, Any], key: str, gguf_path: Path) -> list[int]:
    value = md.get(key)
    if value is None:
        return []
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
        raise TokenizerError(f"{gguf_path.name}: the metadata field {key} is not an array of integers",
                             "the GGUF metadata is damaged")
    return value.tolist()


def _required(md: dict[str, Any], key: str, gguf_path: Path) -> Any:
    if key not in md:
        raise TokenizerError(f"{gguf_path.name} lacks the metadata field {key}", "the GGUF is incomplete")
    return md[key]
