"""The decode thread count (engine/threads.py) changes only the order of float sums: on the real
model, greedy replies are the same tokens with the count fixed, changing at every step, and
adapting to this machine's load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from qwenchat.engine import threads
from qwenchat.engine.chat import ChatEngine, GenerateOptions
from qwenchat.engine.threads import ThreadChooser, ladder
from tests.engine.test_threads import Alternating

PROMPTS = [
    [{"role": "user", "content": "Write a Python function that checks whether a number is prime."}],
    [{"role": "user", "content": "Explain in two sentences what a hash map is."}],
]
TOKENS = 32


@pytest.fixture(scope="module")
def engine(real_model_dir: Path) -> ChatEngine:
    from qwenchat.paths import kernels_dir

    return ChatEngine.load(real_model_dir, device="cpu", kernel_dir=kernels_dir())  # the default: int8


@pytest.fixture
def chooser_restored():
    saved_count, saved = torch.get_num_threads(), threads.use(None)
    yield
    threads.use(saved)
    torch.set_num_threads(saved_count)


def greedy(engine: ChatEngine, chooser: ThreadChooser, messages) -> list[int]:
    threads.use(chooser)
    engine.reset_cache()
    saved = engine.defaults
    engine.defaults = replace(saved, eos_ids=frozenset())  # exactly TOKENS tokens
    try:
        *_, reply = engine.chat(messages, GenerateOptions(temperature=0, repetition_penalty=1.0, max_new_tokens=TOKENS))
    finally:
        engine.defaults = saved
    return reply.token_ids


@pytest.mark.parametrize("messages", PROMPTS, ids=["prime", "hashmap"])
def test_greedy_tokens_do_not_depend_on_the_thread_count(engine, chooser_restored, messages):
    cores = torch.get_num_threads()
    fixed = greedy(engine, ThreadChooser((cores,)), messages)
    assert len(fixed) == TOKENS
    assert greedy(engine, Alternating(ladder(max(cores, 2))), messages) == fixed
    assert greedy(engine, ThreadChooser(ladder(max(cores, 2))), messages) == fixed
