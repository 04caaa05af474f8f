"""Fixtures and helpers shared by the tokenizer and template tests: tiny tokenizer folders for
the Qwen2 and Qwen2.5 templates, and transformers' tokenizer for each (the reference)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from qwenchat.engine.gguf_tokenizer import bytes_to_unicode
from tests.fixtures.tiny import QWEN2_5_TEMPLATE, QWEN2_TEMPLATE, build_tokenizer

TEMPLATES = {"qwen2": QWEN2_TEMPLATE, "qwen2_5": QWEN2_5_TEMPLATE}


@pytest.fixture(scope="session")
def tok_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer folder per template name (tokenizer.json + tokenizer_config.json)."""
    root = tmp_path_factory.mktemp("tok-dirs")
    out = {}
    for name, template in TEMPLATES.items():
        build_tokenizer(root / name, template)
        out[name] = root / name
    return out


@cache
def reference(model_dir: Path):
    """transformers' tokenizer for a folder (the thing we must match)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def byte_token(tokenizer, byte: int) -> int:
    """The id of the single-byte token for `byte` (byte-level BPE has all 256)."""
    token_id = tokenizer.token_id(bytes_to_unicode()[byte])
    assert token_id is not None
    return token_id


