"""Our engine on real weights (Qwen2.5-Coder-0.5B-Instruct), against transformers loading the
same GGUF: identical chat ids, identical greedy tokens, logits within tolerance, sane answers."""

from __future__ import annotations

import pytest
import torch

from qwenchat.engine.chat import ChatEngine, GenerateOptions
from qwenchat.engine.generate import Reply
from tests.real.greedy_check import first_disagreement

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "user", "content": "Explique la différence entre une liste et un tuple en Python."}],
    [{"role": "user", "content": "用一句话解释什么是递归。"}],
    [
        {"role": "user", "content": "Convert 3 feet to centimetres."},
        {"role": "assistant", "content": "3 feet is 91.44 cm."},
        {"role": "user", "content": "And 10 feet? 🤔"},
    ],
]


@pytest.fixture
def engine(real_engine_fp32: ChatEngine) -> ChatEngine:
    """The tier's float32 engine (tests/real/conftest.py), loaded once, with nothing cached."""
    real_engine_fp32.reset_cache()
    return real_engine_fp32


def greedy(engine: ChatEngine, messages, n: int) -> Reply:
    engine.reset_cache()
    from dataclasses import replace

    saved = engine.defaults
    engine.defaults = replace(saved, eos_ids=frozenset())  # force exactly n tokens
    try:
        *_, reply = engine.chat(messages, GenerateOptions(temperature=0, repetition_penalty=1.0, max_new_tokens=n))
    finally:
        engine.defaults = saved
    return reply


def reference_logits(model, ids: list[int]) -> torch.Tensor:
    """transformers' float32 logits at every position of `ids`, from one forward pass."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def test_chat_ids_match_transformers(engine, hf_reference_tokenizer):
    for messages in PROMPTS:
        expected = hf_reference_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
        assert engine.encode_chat(messages) == list(expected)


def test_greedy_64_tokens_and_logits_match_transformers(engine, hf_reference_model):
    """Our greedy reply is transformers', checked in one forward pass of transformers over the
    prompt and the reply (greedy_check.py; generating with it token by token took 70 of this
    test's 170 s)."""
    from qwenchat.engine.generate import prefill

    for messages in PROMPTS:
        ids = engine.encode_chat(messages)
        engine.reset_cache()
        ours_logits = prefill(engine.model, engine.cache, ids)
        got = greedy(engine, messages, 64).token_ids
        assert len(got) == 64
        ref = reference_logits(hf_reference_model, ids + got[:-1])
        assert (ours_logits - ref[len(ids) - 1]).abs().max().item() < 1e-3
        expected = ref[len(ids) - 1 :].argmax(-1).tolist()
        first = first_disagreement(expected, got)
        assert first is None, f"{messages[-1]['content']!r}: transformers chose {expected[first]} at token {first}, we {got[first]}"


def test_capital_of_france_mentions_paris(engine):
    *_, reply = engine.chat(PROMPTS[0], GenerateOptions(temperature=0, max_new_tokens=40))
    assert "Paris" in reply.text


def test_python_question_yields_a_code_block(real_engine_int8: ChatEngine):
    """With the default CPU settings (int8), what users get."""
    real_engine_int8.reset_cache()
    *_, reply = real_engine_int8.chat(
        [{"role": "user", "content": "Write a short Python function that adds two numbers."}],
        GenerateOptions(temperature=0, max_new_tokens=120),
    )
    assert "```" in reply.text and "def " in reply.text


def test_follow_up_turn_reuses_the_previous_reply_from_the_cache(engine):
    engine.reset_cache()
    msgs = list(PROMPTS[0])
    *_, first = engine.chat(msgs, GenerateOptions(temperature=0, max_new_tokens=40))
    msgs += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And of Italy?"}]
    *_, second = engine.chat(msgs, GenerateOptions(temperature=0, max_new_tokens=20))
    # the whole first prompt and the generated reply (less at most the last token) were reused
    assert second.usage.cached_tokens >= first.usage.prompt_tokens + first.usage.completion_tokens - 1
    assert "Rome" in second.text
