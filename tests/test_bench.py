"""`qwenchat.bench` on the tiny model: every field present and plausible, and the follow-up turn
really reused the conversation's keys/values from the cache."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qwenchat import bench

WORKLOAD = replace(bench.QUICK, decode_tokens=8)


@pytest.fixture(scope="module")
def result(tiny_model):
    steps: list[str] = []
    out = bench.run(tiny_model, device="cpu", workload=WORKLOAD, progress=steps.append)
    out["_steps"] = steps
    return out


def test_every_field_is_present_and_positive(result):
    for key in bench.INFO_KEYS:
        assert key in result
    for key in bench.FIELDS:
        assert key in result
        if key != "peak_cuda_mb":
            assert result[key] > 0, key
    assert result["peak_cuda_mb"] is None  # CPU run
    assert result["device"] == "cpu" and result["dtype"] == "float32"


def test_timings_are_consistent(result):
    assert result["ttft_s"] <= result["decode_total_s"]
    assert result["long_prefill_s"] <= 60
    assert result["decode_tokens"] == WORKLOAD.decode_tokens  # forced: eos switched off
    assert result["long_prompt_tokens"] > result["short_prompt_tokens"]
    assert result["short_prefill_tok_s"] > 0 and result["decode_tok_s"] > 0
    assert 0 < result["peak_rss_mb"] < 64 * 1024


def test_followup_reuses_the_cache(result):
    cached, total = result["followup_cached_tokens"], result["followup_prompt_tokens"]
    assert cached >= result["long_prompt_tokens"] - 1  # the whole conversation came from the cache
    # only the short reply and the follow-up question were prefilled
    assert 0 < total - cached <= total - result["long_prompt_tokens"] + 1


def test_progress_names_each_step(result):
    assert len(result["_steps"]) == 5 and result["_steps"][0] == "loading the model"


def test_texts_are_deterministic_and_ten_turns_long():
    a, b = bench.conversation(), bench.conversation()
    assert a == b
    assert sum(m["role"] == "user" for m in a) == 10 and a[-1]["role"] == "user"
    follow = bench.followup_conversation()
    assert follow[: len(a)] == a and follow[-1]["content"] == bench.FOLLOWUP
    assert bench.conversation(replace(bench.FULL, seed=1)) != a


def test_rows_format_every_measure(result):
    labels = [label for label, _ in bench.rows(result)]
    assert "decode" in labels and "peak memory (RSS)" in labels
    assert all(value.split()[-1] in ("s", "tokens", "tok/s", "MB") for _, value in bench.rows(result))


def test_quantize_is_refused_clearly_when_the_engine_lacks_it(tiny_model):
    from qwenchat.engine.errors import SettingsError

    if bench.engine_supports_quantize():
        pytest.skip("this engine has a quantize option; the refusal path does not apply")
    with pytest.raises(SettingsError, match="quantize"):
        bench.run(tiny_model, device="cpu", quantize="int8", workload=WORKLOAD)
