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


def test_quantize_is_passed_through_or_refused_clearly(tiny_model):
    from qwenchat.engine.errors import SettingsError

    if bench.engine_supports_quantize():
        out = bench.run(tiny_model, device="cpu", quantize="int8", workload=WORKLOAD)
        assert out["quantize"] == "int8" and out["decode_tok_s"] > 0 and out["followup_cached_tokens"] > 0
    else:
        with pytest.raises(SettingsError, match="quantize"):
            bench.run(tiny_model, device="cpu", quantize="int8", workload=WORKLOAD)


# -- benchmarks/compare.py: ratios, verdicts and tables on fabricated measurements ----------------

def _compare_module():
    import importlib.util
    import sys
    from pathlib import Path

    if "bench_compare" in sys.modules:
        return sys.modules["bench_compare"]
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"
    spec = importlib.util.spec_from_file_location("bench_compare", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


FABRICATED = {
    "ours": {"load_s": 1.0, "ttft_s": 0.2, "short_prefill_tok_s": 200.0, "decode_tok_s": 25.0,
             "long_prefill_tok_s": 150.0, "long_prefill_s": 22.8, "followup_ttft_s": 0.5, "peak_rss_mb": 1400.0},
    "ours-fast": {"decode_tok_s": 40.0, "peak_rss_mb": 900.0},
    "hf-fp32": {"load_s": 20.0, "ttft_s": 0.45, "short_prefill_tok_s": 100.0, "decode_tok_s": 6.3,
                "long_prefill_tok_s": 143.0, "long_prefill_s": 23.9, "followup_ttft_s": 23.9, "peak_rss_mb": 4000.0},
    "hf-bf16": {"decode_tok_s": 11.5, "peak_rss_mb": 1600.0},
    "llama.cpp": {"decode_tok_s": 37.7, "long_prefill_tok_s": 99.0, "peak_rss_mb": 770.0},
    "cold-start": {"wall_s": 3.4, "load_s": 1.0, "ttft_s": 0.3},
}


def test_compare_ratio_and_verdict():
    c = _compare_module()
    assert c.ratio(25.0, 12.5) == 2.0 and c.ratio(None, 1.0) is None and c.ratio(1.0, 0) is None
    assert c.verdict(2.0, ">=", 2.0) == "met" and c.verdict(1.99, ">=", 2.0) == "not met"
    assert c.verdict(0.05, "<=", 0.05) == "met" and c.verdict(0.06, "<=", 0.05) == "not met"
    assert c.verdict(None, ">=", 1.0) == "n/a"
    assert c.fmt(0.0209, "x") == "0.021x" and c.fmt(2.174, "x") == "2.17x" and c.fmt(None) == "-"


def test_compare_evaluates_every_issue_6_target():
    c = _compare_module()
    rows = {r["target"]: r for r in c.evaluate(FABRICATED)}
    assert set(rows) == {"decode_default", "decode_fastest", "prefill_3k", "followup_ttft", "cold_start", "peak_memory"}
    assert rows["decode_default"]["measured"] == 25.0 / 11.5 and rows["decode_default"]["verdict"] == "met"
    assert rows["decode_fastest"]["verdict"] == "met"  # 40 / 37.7
    assert rows["prefill_3k"]["verdict"] == "met"  # 150 / 143
    assert abs(rows["followup_ttft"]["measured"] - 0.5 / 23.9) < 1e-12 and rows["followup_ttft"]["verdict"] == "met"
    assert rows["cold_start"]["verdict"] == "not met" and rows["cold_start"]["bound"] == "<= 3"
    assert rows["peak_memory"]["verdict"] == "met"
    missing = {r["target"]: r["verdict"] for r in c.evaluate({"ours": FABRICATED["ours"]})}
    assert missing["decode_default"] == "n/a" and missing["peak_memory"] == "met"


def test_compare_tables_put_figures_and_ratios_side_by_side():
    c = _compare_module()
    header, rows = c.side_by_side(FABRICATED)
    assert header[:6] == ["measure", "ours", "ours-fast", "hf-fp32", "hf-bf16", "llama.cpp"]
    assert header[6:] == ["ours/hf-fp32", "ours/hf-bf16", "ours/llama.cpp"]
    decode = next(r for r in rows if r[0].startswith("decode"))
    assert decode[1:6] == ["25.0", "40.0", "6.3", "11.5", "37.7"] and decode[6:] == ["3.97x", "2.17x", "0.66x"]
    text = c.render_text(*c.targets_table(c.evaluate(FABRICATED)))
    assert "not met" in text and "follow-up TTFT" in text and "0.021x" in text
    assert len({len(line) for line in text.splitlines()}) == 1  # aligned


def test_compare_reads_ask_usage_times():
    c = _compare_module()
    err = "tokens: prompt 20 (cached 0, prefilled 20), completion 1; finish: length\ntime: load 1.25s, first token 0.40s, prefill 50.0 tok/s, decode 0.0 tok/s\n"
    assert c._usage_times(err) == {"load_s": 1.25, "ttft_s": 0.40}
    assert c._usage_times("no usage line") == {}


def test_compare_plans_the_fastest_and_full_precision_runs():
    c = _compare_module()
    # the default already quantizes: it is the fastest mode, and a full-precision run is added
    assert c.plan_ours(None, "int8", True) == [("ours-fp32", "quantize=none")]
    # a full-precision default: the int8 mode is the fastest one
    assert c.plan_ours(None, "none", True) == [("ours-fast", "quantize=int8")]
    assert c.plan_ours(None, None, False) == []  # an engine without a quantize option
    assert c.plan_ours("dtype=bfloat16", "int8", True)[0] == ("ours-fast", "dtype=bfloat16")
