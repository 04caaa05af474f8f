"""`ask -u`'s model lines (cli/ask_report.py): found hands-on as one line of nested parentheses,
`model: coder on cpu, float32 (no GPU found, …; int4 weights requested (…); …; cache; …)`, where
the user could not tell whether int4 was in use. Now the first line says what computes in what,
and each reason has a line of its own."""

from __future__ import annotations

import re
from pathlib import Path

from qwenchat.cli.ask_report import usage_lines
from qwenchat.engine.records import Reply, Timings, Usage
from qwenchat.session_records import ModelInfo
from tests.cli.inprocess import run_cli

REPLY = Reply("hi", "stop", Usage(5, 0, 5, 2), Timings(0.1, 0.1, 0.1, 50.0, 20.0))


def test_the_model_line_says_what_is_in_use_and_each_reason_has_a_line():
    info = ModelInfo(label="coder", device="cpu", dtype="float32", precision="int4", context_window=4096,
                     chat_tuned=True, placement_reason="device: no GPU found\nweights: int4 weights, as requested\n"
                     "kernels: qwenchat's int8 kernel")
    lines = usage_lines(REPLY, info).splitlines()
    assert lines[:4] == ["model: coder on cpu, int4 weights (float32 activations)", "  device: no GPU found",
                         "  weights: int4 weights, as requested", "  kernels: qwenchat's int8 kernel"]
    assert lines[4].startswith("tokens: prompt 5") and lines[5].startswith("time: load")


def test_a_reply_stopped_before_its_first_token_has_no_first_token_time():
    info = ModelInfo(label="m", device="cpu", dtype="float32", precision="int8", context_window=4096,
                     chat_tuned=True, placement_reason="")
    stopped = Reply("", "cancelled", Usage(13065, 0, 4096, 0), Timings(2.4, 2.4, 0.0, 1706.7, 0.0))
    time_line = usage_lines(stopped, info).splitlines()[-1]
    assert "stopped before the first token, at 2.40s" in time_line and "first token 2.40s" not in time_line
    assert "first token 0.10s" in usage_lines(REPLY, info)  # a reply that had one says so


def test_full_precision_weights_are_named_once():
    info = ModelInfo(label="m", device="cuda", dtype="bfloat16", precision="bfloat16", context_window=4096,
                     chat_tuned=True, placement_reason="device: CUDA GPU found\nweights: full-precision weights")
    assert usage_lines(REPLY, info).splitlines()[:2] == ["model: m on cuda, bfloat16", "  device: CUDA GPU found"]


def test_a_real_int4_load_reads_as_lines_of_whole_items(tiny_model: Path, isolated_home: Path):
    r = run_cli(["ask", "-n", "-u", "-m", str(tiny_model), "--device", "cpu", "--quantize", "int4",
                 "--max-tokens", "2", "Hi"], isolated_home)
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode().splitlines()
    top = next(i for i, line in enumerate(err) if line.startswith("model: "))
    assert err[top] == f"model: {tiny_model} on cpu, int4 weights (float32 activations)"
    reasons = err[top + 1:top + 4]
    assert [re.match(r"  (\w+): ", line).group(1) for line in reasons] == ["device", "weights", "kernels"], err
    assert reasons[1].startswith("  weights: int4 weights, as requested (lossy")
    assert err[top + 4].startswith("tokens: prompt")
    assert not any(item.strip(" ()") == "cache" for line in reasons for item in line.split(";")), err  # no bare 'cache'
