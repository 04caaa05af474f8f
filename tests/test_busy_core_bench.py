"""benchmarks/busy_core.py: its verdicts and table on fabricated measurements, and its busy loop
(pinned, and gone with the script)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest


def _module():
    if "bench_busy_core" not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "benchmarks" / "busy_core.py"
        spec = importlib.util.spec_from_file_location("bench_busy_core", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_busy_core"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_busy_core"]


def _table(as_is: dict[str, list[float]], busy: dict[str, list[float]]):
    m = _module()
    return {m.DECODE_AS_IS: as_is, m.DECODE_BUSY: busy}


def test_adaptive_is_judged_against_the_best_fixed_count_of_each_condition():
    m = _module()
    table = _table({"ours adaptive": [40, 39, 41], "ours 1 thread": [21, 22, 20], "ours 2 threads": [41, 40, 42]},
                   {"ours adaptive": [17, 18, 19], "ours 1 thread": [18, 19, 18], "ours 2 threads": [1.5, 1.6, 1.7]})
    idle, busy = m.verdicts(table)
    assert "ours 2 threads" in idle["target"] and idle["ratio"] == pytest.approx(40 / 41)
    assert idle["verdict"] == "met"
    assert "ours 1 thread" in busy["target"] and busy["ratio"] == pytest.approx(18 / 18)
    assert busy["verdict"] == "met"


def test_an_adaptive_count_stuck_on_all_cores_under_load_is_not_met():
    m = _module()
    table = _table({"ours adaptive": [40], "ours 1 thread": [21], "ours 2 threads": [41]},
                   {"ours adaptive": [1.6], "ours 1 thread": [18], "ours 2 threads": [1.6]})
    assert [r["verdict"] for r in m.verdicts(table)] == ["met", "not met"]


def test_the_table_shows_medians_ratios_and_the_machine():
    m = _module()
    table = _table({"ours adaptive": [40, 30, 41], "ours 1 thread": [20, 20, 20], "ours 2 threads": [41, 40, 42]},
                   {"ours adaptive": [18], "ours 1 thread": [18], "ours 2 threads": [1.6]})
    info = {"cpu": "Test CPU", "cores": 2, "load_before": 0.1, "load_after": 0.2, "rounds": 3, "tokens": 64,
            "busy_core": 1, "duty_ms": 100, "adaptive_count": 1, "adaptive_switches": 1}
    text = m.report(table, m.verdicts(table), info)
    assert "Test CPU, 2 cores" in text
    assert "core 1 (100 ms of every 100)" in text
    assert "| decode, as is | 40.0 | 20.0 | 41.0 | 2.00x | - |" in text
    assert "| decode, + busy core: adaptive >= best fixed count (ours 1 thread) | 1.00x | >= 0.95 | met |" in text


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs Linux, 2 cores")
def test_the_busy_loop_holds_one_core_and_ends_with_the_script():
    import subprocess
    import time

    m = _module()
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', {m.BUSY_LOOP!r}, '1', '100'])\n"
                               "print(p.pid, flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        time.sleep(0.5)
        assert os.sched_getaffinity(child) == {1}
    finally:
        parent.kill()
        parent.wait()
    for _ in range(100):  # its parent gone, it stops at its next check (a fraction of a second)
        if not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        pytest.fail("the busy loop outlived the script")
