"""benchmarks/serve_overhead.py: its timing arithmetic, verdicts and table on fabricated samples
(the benchmark itself takes minutes on the real model and is not part of pytest)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("serve_overhead", ROOT / "benchmarks" / "serve_overhead.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_overhead"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def row(bench, name, ttft_ms, tok_s):
    return bench.summarise(name, [bench.Sample(ttft_ms / 1000, tok_s, 128)] * 3)


def test_sample_counts_decode_from_the_first_text_to_the_last(bench):
    s = bench.sample(10.0, [10.5, 11.0, 12.5], 21)
    assert s.ttft_s == pytest.approx(0.5) and s.decode_tok_s == pytest.approx(10.0) and s.tokens == 21
    assert math.isnan(bench.sample(0.0, [1.0], 1).decode_tok_s)
    with pytest.raises(RuntimeError):
        bench.sample(0.0, [], 0)


def test_summary_takes_medians_and_ranges(bench):
    runs = [bench.Sample(t / 1000, d, 128) for t, d in ((100, 20), (300, 10), (200, 30))]
    r = bench.summarise("x", runs)
    assert (r.ttft_ms, r.decode_tok_s) == pytest.approx((200, 20))
    assert r.ttft_ms_range == pytest.approx((100, 300)) and r.decode_range == (10, 30) and r.runs == 3


@pytest.mark.parametrize("ttft, tok_s, met", [(140, 19.0, (True, True)), (160, 19.0, (True, False)),
                                              (120, 18.9, (False, True)), (100, 25.0, (True, True))])
def test_verdicts_against_the_targets(bench, ttft, tok_s, met):
    base, server = row(bench, bench.IN_PROCESS, 100, 20.0), row(bench, "server", ttft, tok_s)
    assert tuple(v[2] for v in bench.verdicts(base, server)) == met


def test_engine_speed_is_read_from_the_servers_access_log(bench):
    server = object.__new__(bench.Server)
    server.lines = ['qwenchat serve: ready, model x on cpu (int8), loaded in 1.0s',
                    '127.0.0.1 "GET /v1/models" 200 0.01s',
                    '127.0.0.1 "POST /v1/chat/completions" 200 prompt 42 (cached 3) completion 128 31.5 tok/s 4.20s']
    assert server.generations() == 1
    assert server.engine_tok_s(after=0) == 31.5
    assert server.engine_tok_s(after=1, timeout=0.05) is None  # no newer line came


def test_report_has_every_row_and_a_verdict_per_target(bench):
    rows = [row(bench, bench.IN_PROCESS, 100, 20.0), row(bench, "server (openai, stream)", 160, 19.5),
            row(bench, "qwenchat ask -m http://127.0.0.1:1/v1", 130, 18.0)]
    text = bench.report(rows)
    assert all(r.name in text for r in rows)
    assert "0.975x" in text and "+60.0 ms" in text and "0.900x" in text and "+30.0 ms" in text
    assert text.count("NOT MET") == 2 and text.count(" met") == 2
    assert "engine tok/s" in text.splitlines()[0]


def test_engine_column_takes_the_median_when_known(bench):
    runs = [bench.Sample(0.1, 20, 128, e) for e in (30.0, 10.0, 20.0)]
    assert bench.summarise("x", runs).engine_tok_s == 20.0
    assert bench.summarise("y", [bench.Sample(0.1, 20, 128)]).engine_tok_s is None
