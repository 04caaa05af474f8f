"""The quality guard for int8 weights on the real model (issue 6): a lossy mode may be the CPU
default only while (1) greedy output equals float32's for the first 32 tokens on at least 4 of 5
prompts and (2) perplexity on a fixed ~2,000-token English text (data/guard_text.txt, written for
this test) is at most 1.02x float32's. The int8 model is loaded with the default CPU settings,
so this guards exactly what users get (also the int8 prompt products a CPU with AMX takes,
which the rest of the suite pins off: `users_settings`). Its greedy replies run token by token
(their prompts on the matrix units where the CPU has them, the rest the int8 kernel) and float32 checks
them in one forward pass (`float32_makes_the_same_replies`); perplexity is scored in 512-token
chunks (the dequantized path, which computes the same function as the kernel, or the int8
products on such a CPU).

For `--quantize int4` (opt-in, not a default) the issue's looser bounds (3 of 5 prompts,
perplexity within 5%) are recorded as not met (strict xfail, numbers below), and a regression
guard keeps the mode at its measured quality. Its weights are cached beside the test model."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from qwenchat.engine.chat import ChatEngine, GenerateOptions
from qwenchat.engine.device import AMX_PROMPTS_ENV, amx_prompts, choose
from qwenchat.engine.generate import Reply
from tests.real.conftest import REAL_CONTEXT
from tests.real.greedy_check import first_disagreement

TEXT = (Path(__file__).parent / "data" / "guard_text.txt").read_text(encoding="utf-8")
PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain in two sentences what a hash table is.",
    "What is the capital of France, and what river runs through it?",
    "Write a haiku about autumn leaves.",
    "List three differences between TCP and UDP.",
]
N_TOKENS = 32


def perplexity(engine: ChatEngine, text: str, chunk: int = 512) -> float:
    ids = engine.tokenizer.encode_plain(text)
    model, cache = engine.model, engine.cache
    cache.reset()
    nll, n = 0.0, 0
    for a in range(0, len(ids), chunk):
        part = ids[a : a + chunk]
        h = model.hidden(torch.tensor([part]), cache, a)
        cache.tokens.extend(part)
        targets = torch.tensor(ids[a + 1 : a + 1 + len(part)])
        logp = torch.log_softmax(model.logits(h)[0, : len(targets)], dim=-1)
        nll -= logp[torch.arange(len(targets)), targets].sum().item()
        n += len(targets)
    cache.reset()
    return math.exp(nll / n)


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def greedy_replies(engine: ChatEngine) -> list[list[int]]:
    out = []
    opts = GenerateOptions(temperature=0.0, repetition_penalty=1.0, max_new_tokens=N_TOKENS)
    for prompt in PROMPTS:
        engine.reset_cache()
        reply = list(engine.chat(messages(prompt), opts))[-1]
        assert isinstance(reply, Reply)
        out.append(reply.token_ids)
    return out


def float32_makes_the_same_replies(fp32: ChatEngine, replies: list[list[int]]) -> tuple[list[bool], float]:
    """Whether float32's greedy reply to each prompt is `replies[i]` (its first N_TOKENS tokens,
    or ending where it ended), checked in one forward pass of float32 over the prompt and the reply
    (greedy_check.py): cheaper than generating float32's replies (~36 s on 2 cores). Also the share
    of the replies' tokens that float32 would have chosen after the same preceding tokens (a
    steadier figure than whole replies, which part for good at the first different choice)."""
    model, cache = fp32.model, fp32.cache
    same, agreed, total = [], 0, 0
    for prompt, reply in zip(PROMPTS, replies):
        ids, reply = fp32.encode_chat(messages(prompt)), reply[:N_TOKENS]
        cache.reset()
        with torch.inference_mode():
            choices = model.logits(model.hidden(torch.tensor([ids + reply]), cache, 0))[0].argmax(-1).tolist()
        cache.reset()
        mine = choices[len(ids) - 1 :]
        same.append(first_disagreement(mine, reply, fp32.defaults.eos_ids, N_TOKENS) is None)
        agreed, total = agreed + sum(a == b for a, b in zip(mine, reply)), total + len(reply)
    return same, agreed / max(total, 1)


@dataclass(frozen=True)
class Measured:
    quantize: str
    perplexity: float
    same_as_float32: list[bool] | None = None  # per prompt, whether its greedy reply is float32's
    agreement: float | None = None  # share of its replies' tokens float32 would have chosen too


@contextmanager
def users_settings() -> Iterator[None]:
    """The environment of a user's process: without the suite's pin of float32 prompt products
    (tests/conftest.py), so a CPU with AMX takes its int8 tiles (device.amx_prompts)."""
    saved = os.environ.pop(AMX_PROMPTS_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[AMX_PROMPTS_ENV] = saved


@pytest.fixture(scope="module")
def users_int8(real_model_dir: Path, real_engine_int8: ChatEngine) -> ChatEngine:
    """The default CPU mode as a user's process loads it: the tier's int8 engine, unless this CPU
    would multiply prompts on its matrix units there, then one loaded so."""
    with users_settings():
        if not amx_prompts(choose("cpu", "auto"), "int8"):
            return real_engine_int8
        return ChatEngine.load(real_model_dir, device="cpu", max_context=REAL_CONTEXT)


@pytest.fixture(scope="module")
def results(real_engine_fp32: ChatEngine, users_int8: ChatEngine) -> dict[str, Measured]:
    """float32 (the tier's engine: max_context 4096 on the CPU) and the default CPU mode (int8)."""
    assert len(users_int8.tokenizer.encode_plain(TEXT)) >= 1900
    return {
        "fp32": Measured(real_engine_fp32.info.quantize, perplexity(real_engine_fp32, TEXT)),
        "default": measured(users_int8, real_engine_fp32),
    }


def measured(engine: ChatEngine, fp32: ChatEngine) -> Measured:
    same, agreement = float32_makes_the_same_replies(fp32, greedy_replies(engine))
    return Measured(engine.info.quantize, perplexity(engine, TEXT), same, agreement)


def test_the_cpu_default_is_the_guarded_int8_mode(results):
    assert results["fp32"].quantize == "none"
    assert results["default"].quantize == "int8"


def test_int8_greedy_output_equals_float32_on_4_of_5_prompts(results):
    same = results["default"].same_as_float32
    assert sum(same) >= 4, f"identical greedy replies: {same}"


def test_int8_perplexity_is_within_2_percent_of_float32(results):
    ppl_fp32, ppl_int8 = results["fp32"].perplexity, results["default"].perplexity
    assert 5 < ppl_fp32 < 100  # the text is plain English: a sane model scores it sanely
    assert ppl_int8 <= 1.02 * ppl_fp32, f"perplexity fp32 {ppl_fp32:.3f}, int8 {ppl_int8:.3f}"


# The bounds for int4 (issue 15). Measured (benchmarks/int4_quality.py, engine-int4-emb8:
# embedding int8, q/k/v int8, the rest int4, the output projection's top logits from int8 rows):
# perplexity 1.023x float32's (met; 1.048x before the Lloyd steps of quantize_int4.py), greedy
# replies equal on 2 of 5 prompts (not met; a count that moves with any change of rounding: two of
# the five hang on a 0.01-logit lead of float32's, see benchmarks/int4_quality.py). int4 stays an
# opt-in mode, and the greedy test says so until a format meets it (strict: a pass fails, to be noticed).
INT4_SAME_REPLIES, INT4_PERPLEXITY = 3, 1.05
# What the opt-in mode must keep meanwhile: its decode path's choices agree with float32's on
# 95.5% of its replies' tokens (int8: 99.2%), measured on the development machine; with a margin.
INT4_KEPT_AGREEMENT = 0.93
MISSED = pytest.mark.xfail(strict=True, reason="int4's greedy replies equal float32's on 2 of 5 prompts on this 0.5B model")


@pytest.fixture(scope="module")
def int4_results(real_model_dir: Path, real_engine_fp32: ChatEngine) -> Measured:
    with users_settings():
        engine = ChatEngine.load(real_model_dir, device="cpu", max_context=4096, quantize="int4",
                                 int8_cache_dir=real_model_dir.parent / "weight-caches")  # fmt: skip
    return measured(engine, real_engine_fp32)


def _int4_same(int4_results: Measured) -> list[bool]:
    assert int4_results.quantize == "int4"
    return int4_results.same_as_float32


@MISSED
def test_int4_greedy_output_equals_float32_on_3_of_5_prompts(results, int4_results):
    same = _int4_same(int4_results)
    assert sum(same) >= INT4_SAME_REPLIES, f"identical greedy replies: {same}"


def test_int4_perplexity_is_within_5_percent_of_float32(results, int4_results):
    ppl_fp32, ppl_int4 = results["fp32"].perplexity, int4_results.perplexity
    assert ppl_int4 <= INT4_PERPLEXITY * ppl_fp32, f"perplexity fp32 {ppl_fp32:.3f}, int4 {ppl_int4:.3f}"


def test_int4_keeps_its_measured_quality(results, int4_results):
    assert int4_results.quantize == "int4"
    assert int4_results.agreement >= INT4_KEPT_AGREEMENT, f"token agreement with float32 {int4_results.agreement:.3f}"
    assert results["default"].agreement > int4_results.agreement  # int8 stays the closer one
