"""Where a cold `qwenchat ask` spends its time before the first byte of the reply (issue 15,
item 6: the first token within 2 s).

    .venv/bin/python benchmarks/cold_start.py [--runs 5] [--model DIR]

The headline: the first byte of `qwenchat ask -m DIR Hi --max-tokens 1 --no-save --plain` as a
user starts it (the console script; nothing wrapped), timed from spawning it. Then a run of the
same command through a small wrapper that notes the time (from the moment the process was spawned) when
Python is up, the CLI is imported, the engine's load begins (`startup.load_engine`), the
tokenizer starts and ends parsing (`Tokenizer.from_dir`: torch has been imported by then), the
load ends, and the first byte of the reply is written. A first, unmeasured run builds the int8
cache and warms the page cache. Printed: each phase's median and range over the runs, and the
median of `import torch` alone in a bare process, measured between the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("python up", "cli imported", "load begins", "tokenizer begins", "tokenizer parsed", "load ends",
          "first byte")

# Runs inside the measured process: wraps the functions that bound each phase, then runs the CLI.
WRAPPER = """
import os, sys, time
T0 = float(os.environ["COLD_T0"])
def mark(what): sys.stderr.write(f"@@ {what} {time.time() - T0:.4f}\\n"); sys.stderr.flush()
mark("python up")
import qwenchat.cli as cli
mark("cli imported")
import qwenchat.startup as startup
load = startup.load_engine
def load_engine(*a, **k):
    mark("load begins"); r = load(*a, **k); mark("load ends"); return r
startup.load_engine = load_engine
import qwenchat.engine.tokenizer as tk
from_dir = tk.Tokenizer.from_dir.__func__
def wrapped(cls, *a, **k):
    mark("tokenizer begins"); r = from_dir(cls, *a, **k); mark("tokenizer parsed"); return r
tk.Tokenizer.from_dir = classmethod(wrapped)
out = sys.stdout
class First:
    seen = False
    def write(self, s):
        if s and not First.seen:
            First.seen = True; mark("first byte")
        return out.write(s)
    def __getattr__(self, name): return getattr(out, name)
sys.stdout = First()
cli.main(sys.argv[1:])
"""


def model_dir() -> Path:
    from benchmarks.app_speed import model_dir as imported

    return imported()


def one_run(model: Path, home: str) -> dict[str, float]:
    env = {**os.environ, "QWENCHAT_HOME": home, "HF_HUB_OFFLINE": "1", "COLD_T0": f"{time.time():.6f}"}
    args = ["ask", "-m", str(model), "Hi", "--max-tokens", "1", "--no-save", "--plain"]
    r = subprocess.run([sys.executable, "-c", WRAPPER, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"qwenchat ask failed: {r.stderr.strip()[-500:]}")
    marks = {}
    for line in r.stderr.splitlines():
        if line.startswith("@@ "):
            what, _, seconds = line[3:].rpartition(" ")
            marks[what] = float(seconds)
    return marks


def user_command() -> list[str]:
    """`qwenchat` as users start it: the console script beside this Python (pip's entry point),
    else `python -m qwenchat`. They do not start alike: under `-m` (and under this script's
    wrapper) importing torch took 0.5-0.7 s longer on a 2-core Xeon, spent in os.path.realpath
    calls of inspect.getsourcefile while torch registers its ops, for reasons not found (BENCHMARKS.md,
    eighteenth session)."""
    script = Path(sys.executable).with_name("qwenchat")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "qwenchat"]


@dataclass
class AskRun:
    first_s: float  # from spawning the process to the first byte of the reply on its stdout
    exit_s: float
    stderr: str
    ok: bool


def timed_ask(model: Path | str, home: str, *extra: str) -> AskRun:
    """`qwenchat ask -m MODEL Hi --max-tokens 1 --no-save --plain [extra]`, started as users start
    it (nothing wrapped), timed from spawning it."""
    env = {**os.environ, "QWENCHAT_HOME": home, "HF_HUB_OFFLINE": "1"}
    args = ["ask", "-m", str(model), "Hi", "--max-tokens", "1", "--no-save", "--plain", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*user_command(), *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    first = os.read(proc.stdout.fileno(), 1)
    took = time.perf_counter() - t0
    _, err = proc.communicate()
    return AskRun(took, time.perf_counter() - t0, err.decode(errors="replace"), proc.returncode == 0 and bool(first))


def first_byte_s(model: Path, home: str) -> float:
    run = timed_ask(model, home)
    if not run.ok:
        raise SystemExit(f"qwenchat ask failed: {run.stderr.strip()[-500:]}")
    return run.first_s


def torch_import_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--model", type=Path, default=None, help="a model folder (default: the real test model)")
    args = p.parse_args()
    model = args.model or model_dir()
    with tempfile.TemporaryDirectory() as home:
        one_run(model, home)  # builds the int8 cache, warms the page cache
        os.sync()  # its 600+ MB are written out now, not during the measured runs (a user's cache is old)
        runs, torch_s, plain = [], [], []
        for _ in range(args.runs):
            plain.append(first_byte_s(model, home))
            runs.append(one_run(model, home))
            torch_s.append(torch_import_s())
    from benchmarks.machine import header, machine

    print(header(machine()))
    print(f"first byte of the reply, `{' '.join(Path(c).name for c in user_command())} ask` as users start it "
          f"(nothing wrapped): {statistics.median(plain):.3f} s ({min(plain):.3f}-{max(plain):.3f}), "
          f"{args.runs} runs\n")
    print("Where the time goes, measured inside a wrapped start (which is itself slower; see user_command):")
    print(f"{args.runs} runs of `qwenchat ask -m {model.name} Hi --max-tokens 1`; seconds since the process was "
          "spawned (median, min-max)\n")
    print("| phase | at | took |\n|---|---|---|")
    before = [0.0] * len(runs)
    for phase in PHASES:
        at = [r.get(phase, float("nan")) for r in runs]
        took = [a - b for a, b in zip(at, before)]
        print(f"| {phase} | {statistics.median(at):.3f} ({min(at):.3f}-{max(at):.3f}) | {statistics.median(took):.3f} |")
        before = at
    print(f"\n`import torch` alone, a bare process: {statistics.median(torch_s):.3f} s "
          f"({min(torch_s):.3f}-{max(torch_s):.3f}); most of 'load begins' -> 'tokenizer begins'")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
