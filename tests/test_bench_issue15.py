"""Issue 15's benchmark parts (benchmarks/machine.py, issue15.py, app_speed.py, long_context.py):
parsing, ratios and verdicts on fabricated measurements (the scripts themselves take minutes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import app_speed, issue15, long_context, machine  # noqa: E402

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\nCPU implementer\t: 0x41\n"


def test_cpu_features_are_read_from_cpuinfo_in_a_fixed_order():
    model, features = machine.parse_cpuinfo(XEON)
    assert model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert features == ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                        "amx_bf16", "amx_int8", "amx_tile"]
    assert machine.parse_cpuinfo(ARM) == ("", ["asimd"])
    line = machine.header({"cpu": "AMD EPYC", "cores": 2, "features": ["avx2", "fma"], "python": "3.11.7"})
    assert line == "machine: AMD EPYC, 2 cores (avx2 fma); python 3.11.7"


def test_only_names_parts_and_refuses_unknown_ones():
    assert issue15.parse_only(None) == set(issue15.PARTS)
    assert issue15.parse_only("app, long") == {"app", "long"}
    with pytest.raises(ValueError, match="unknown part appp in --only: use any of engines"):
        issue15.parse_only("appp,long")


def _results(int4: float | None = 60.0) -> dict:
    return {
        "ours": {"quantize": "int8", "decode_tok_s": 40.0, "short_prefill_tok_s": 200.0, "long_prefill_tok_s": 300.0},
        "ours-int4": {"quantize": "int4", "decode_tok_s": int4} if int4 else {},
        "hf-fp32": {"short_prefill_tok_s": 100.0, "long_prefill_tok_s": 320.0},
        "hf-bf16": {"short_prefill_tok_s": 250.0},
        "cold-start": {"wall_s": 1.8},
    }


def test_issue15_targets_from_engine_results_and_parts():
    parts = {
        "app": app_speed.summarize({"ask": [{"decode_tok_s": 40.0, "tokens": 64}],
                                    "app": [{"decode_tok_s": 36.0, "tokens": 64, "updates_per_s": 9.8}]}, 0.5, 0.7),
        "long": long_context.summarize({"short": [{"decode_tok_s": 40.0, "context": 42, "tokens": 64}],
                                        "long": [{"decode_tok_s": 34.0, "context": 3417, "tokens": 64}]}, 0.5, 0.6),
        "busy": {"targets": [{"target": "busy core: adaptive >= best fixed count (ours 1 thread)", "ratio": 1.02}]},
    }
    by_text = [(r["text"][:2], r["measured"], r["verdict"]) for r in issue15.evaluate(_results(), parts)]
    assert by_text == [
        ("1.", 1.02, "met"),
        ("2.", 0.9, "not met"),  # 36 / 40
        ("2.", 9.8, "met"),  # screen updates a second, against ~10 (9.5)
        ("3.", 0.8, "not met"),  # short prefill 200 against the faster transformers, bf16's 250
        ("3.", 300 / 320, "not met"),  # long: bf16 did not run it, so fp32's 320
        ("4.", 1.5, "met"),  # int4 60 / int8 40
        ("5.", 0.85, "met"),
        ("6.", 1.8, "met"),
    ]
    header, body = issue15.table(issue15.evaluate(_results(), parts))
    assert header[0] == "target (issue 15)" and body[-1][1:] == ["1.80 s", "<= 2 s", "met"]


def test_missing_parts_and_int4_are_not_applicable_not_failed():
    rows = issue15.evaluate(_results(int4=None), {})
    assert len(rows) == 8  # every target keeps its row
    assert [r["verdict"] for r in rows if r["text"].startswith(("1.", "2.", "4.", "5."))] == ["n/a"] * 5


def test_a_slow_reply_needs_only_one_update_a_token():
    runs = {"ask": [{"decode_tok_s": 4.0, "tokens": 64}],
            "app": [{"decode_tok_s": 3.0, "tokens": 64, "updates_per_s": 2.9}]}
    updates = app_speed.summarize(runs, 9.0, 9.0)["targets"][1]
    assert updates["bound"] == 2.85 and updates["verdict"] == "met"
    runs["app"][0]["updates_per_s"] = 2.0
    assert app_speed.summarize(runs, 9.0, 9.0)["targets"][1]["verdict"] == "not met"


def test_ask_usage_line_is_parsed_and_a_missing_one_is_an_error():
    stderr = ("tokens: prompt 52 (cached 0, prefilled 52), completion 64; finish: length\n"
              "time: load 1.10s, first token 0.30s, prefill 170.0 tok/s, decode 39.5 tok/s\n")
    assert app_speed.parse_usage(stderr) == {"decode_tok_s": 39.5, "tokens": 64}
    with pytest.raises(RuntimeError, match="no usage line"):
        app_speed.parse_usage("Traceback ...")


def test_the_terminal_run_reads_the_speed_the_details_line_shows():
    from types import SimpleNamespace

    from qwenchat.tui.details import details

    reply = SimpleNamespace(role="assistant", created_at=None, meta={
        "model": "coder", "usage": {"completion_tokens": 128}, "timings": {"decode_tok_s": 24.25}})
    found = app_speed.DETAILS.search(details(reply))
    assert found and (int(found.group(1)), float(found.group(2))) == (128, 24.2)
    runs = {"ask": [{"decode_tok_s": 30.0, "tokens": 128}],
            "app": [{"decode_tok_s": 27.0, "tokens": 128, "updates_per_s": 9.8}],
            "terminal": [{"decode_tok_s": 24.0, "tokens": 128}]}
    result = app_speed.summarize(runs, 1.0, 1.0)
    assert result["terminal_ratio"] == pytest.approx(0.8)
    assert "| the app in a terminal (tmux 120x40) | 30.0 | 24.0 | 0.80x |" in app_speed.report(result)


def test_compare_refuses_an_unknown_part(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_compare_15", ROOT / "benchmarks" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare_15"] = compare
    spec.loader.exec_module(compare)
    with pytest.raises(SystemExit) as exc:
        compare.main(["--only", "nope"])
    assert exc.value.code == 2 and "unknown part nope in --only" in capsys.readouterr().err
