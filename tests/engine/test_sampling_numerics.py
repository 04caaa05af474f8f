"""Sampling stays numerically safe (issue 12, item 18): every setting inside its declared range
gives a valid token for any finite scores, and unusable scores from the model (NaN, +inf, all
-inf) end in a clear ModelOutputError, never a raw torch traceback."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from qwenchat.engine.errors import ModelOutputError, SettingsError
from qwenchat.engine.generate import GenerationSettings, stream
from qwenchat.engine.records import OPTION_RANGES, Reply
from qwenchat.engine.sampling import INVALID_SCORES, Sampler, SamplingParams
from qwenchat.engine.tokenizer import Tokenizer
from tests.engine.conftest import load_ours, new_cache

V = 257

EXTREMES = [
    SamplingParams(temperature=1e-45),  # the scaled scores overflow float32
    SamplingParams(temperature=1e-30, top_p=1e-9),
    SamplingParams(temperature=5e-324, top_k=1, min_p=1.0),  # the smallest float above 0
    SamplingParams(temperature=100, top_k=1_000_000),
    SamplingParams(temperature=1e-40, repetition_penalty=100),
    SamplingParams(temperature=0.7, repetition_penalty=0.01, top_p=1e-9, min_p=1.0),
    SamplingParams(temperature=0, repetition_penalty=100),
    SamplingParams(temperature=1e-45, repetition_penalty=0.01, top_k=3, top_p=0.5, min_p=0.5),
]


def _scores(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(V, generator=gen) * 8
    if kind == "huge":
        return x * 1e4
    if kind == "masked":  # most tokens removed by the model itself (-inf is a valid score)
        return x.masked_fill(torch.arange(V) % 5 != 0, float("-inf"))
    if kind == "float16":
        return (x * 1e3).half()
    if kind == "bfloat16":
        return (x * 1e30).bfloat16()
    return x


@pytest.mark.parametrize("kind", ["normal", "huge", "masked", "float16", "bfloat16"])
@pytest.mark.parametrize("params", EXTREMES, ids=range(len(EXTREMES)))
def test_extreme_settings_in_range_always_give_a_valid_token(params, kind):
    params.validate()
    sampler = Sampler(params, V)
    sampler.reset(list(range(0, V, 2)))  # half the vocabulary "seen": penalties apply
    logits = _scores(kind)
    for _ in range(3):
        token = int(sampler(logits))
        assert 0 <= token < V
        assert math.isfinite(float(logits[token])), "a token the model ruled out was sampled"


@pytest.mark.parametrize("temperature", [1e-45, 1e-300, 5e-324])
def test_a_vanishing_temperature_samples_the_likeliest_token(temperature):
    logits = _scores("normal")
    sampler = Sampler(SamplingParams(temperature=temperature, seed=1), V)
    sampler.reset([])
    assert int(sampler(logits)) == int(torch.argmax(logits))


@pytest.mark.parametrize("bad", ["nan", "one-nan", "+inf", "all--inf"])
@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(temperature=0.7, top_p=0.9,
                                    repetition_penalty=1.1)], ids=["greedy", "sampling"])
def test_unusable_model_scores_are_flagged_not_a_torch_error(params, bad):
    logits = _scores("normal")
    if bad == "nan":
        logits = torch.full((V,), float("nan"))
    elif bad == "one-nan":
        logits[5] = float("nan")
    elif bad == "+inf":
        logits[9] = float("inf")
    else:
        logits = torch.full((V,), float("-inf"))
    sampler = Sampler(params, V)
    sampler.reset([1, 2, 3])
    assert int(sampler(logits)) == INVALID_SCORES
    assert 0 <= int(sampler(_scores("normal"))) < V  # the next good step samples normally again


def test_a_model_that_outputs_nan_ends_the_reply_with_a_clear_error(tiny_model):
    model, cfg = load_ours(tiny_model)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))  # as a damaged checkpoint would
    tokenizer = Tokenizer.from_dir(tiny_model)
    settings = GenerationSettings(SamplingParams(temperature=0.7, seed=3), 8, frozenset())
    with pytest.raises(ModelOutputError, match="invalid scores") as err:
        for record in stream(model, new_cache(cfg), tokenizer, [1, 2, 3, 4], settings):
            assert not isinstance(record, Reply)
    assert "float32" in err.value.hint


@pytest.mark.parametrize("value", [0, 10_000_001, 2**70, True])
def test_max_new_tokens_outside_its_range_is_a_settings_error(value):
    with pytest.raises(SettingsError, match="max_new_tokens must be a whole number from 1 to 10,000,000"):
        GenerationSettings(SamplingParams(), value, frozenset())


def test_every_range_boundary_is_accepted_and_every_value_beyond_refused():
    for name, allowed in OPTION_RANGES.items():
        inside = [allowed.high] + ([] if allowed.low_open else [allowed.low])
        outside = [allowed.low - 1, allowed.high + 1, float("nan"), float("inf"), None, "1", True]
        outside += [allowed.low] if allowed.low_open else []
        if allowed.integer:
            outside.append(float(allowed.high) / 2 + 0.5)
        assert all(v in allowed for v in inside), name
        assert not any(v in allowed for v in outside), (name, [v for v in outside if v in allowed])
    for name, value in itertools.product(["temperature", "top_p", "min_p", "repetition_penalty"], [1e-9]):
        assert (value in OPTION_RANGES[name]) == (name != "repetition_penalty")
