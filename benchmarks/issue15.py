"""The parts of `compare.py` for issue 15 ("fast where users really run it") and its targets.

Each part is a script of its own, run here as a subprocess with `--json` so it can also run
alone: `busy_core.py` (decode with one core kept busy), `app_speed.py` (the chat app against
`ask`), `long_context.py` (decode at ~3.4K cached tokens against a short context). The int4
rows are a column of compare.py's own table (`ours-int4`); the cold start is compare.py's.
`evaluate` turns all of it into one met / not met row per target of the issue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PARTS = ("engines", "int4", "cold-start", "busy", "app", "long")  # what `--only` may name
SCRIPTS = {"busy": "busy_core.py", "app": "app_speed.py", "long": "long_context.py"}
COLD_START_BOUND = 2.0  # seconds to the first token of `qwenchat ask`
INT4_BOUND = 1.5  # int4 decode / int8 decode
PREFILL_BOUND = 1.0  # ours / the faster of transformers fp32 and bf16


def parse_only(text: str | None) -> set[str]:
    """`--only app,long` -> {"app", "long"}; None or "" -> every part. Unknown names: ValueError."""
    if not text:
        return set(PARTS)
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part {', '.join(unknown)} in --only: use any of {', '.join(PARTS)}")
    return names


def int4_available() -> bool:
    """Whether this engine accepts `quantize=int4` (the modes are declared once, torch-free)."""
    try:
        from qwenchat.engine.records import QUANTIZE_MODES
    except ImportError:
        return False
    return "int4" in QUANTIZE_MODES


def run_part(part: str, args: list[str], log) -> dict[str, Any] | None:
    """One part's script with `--json`; its JSON, or None (and why, logged) when it failed."""
    script = HERE / SCRIPTS[part]
    if not script.exists():
        log(f"{script.name} is not there: the {part} part is left out")
        return None
    log(f"running {script.name} {' '.join(args)}".rstrip())
    proc = subprocess.run([sys.executable, str(script), "--json", *args], capture_output=True, text=True,
                          cwd=HERE.parent, timeout=7200)
    if proc.returncode != 0:
        log(f"  {script.name} failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}")
        return None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        log(f"  {script.name} printed no JSON: {proc.stdout.strip()[-300:]}")
        return None


def _row(text: str, measured: float | None, op: str, bound: float, unit: str = "x") -> dict[str, Any]:
    if measured is None:
        verdict = "n/a"
    else:
        verdict = "met" if (measured >= bound if op == ">=" else measured <= bound) else "not met"
    return {"text": text, "measured": measured, "bound": f"{op} {bound:g}{'x' if unit == 'x' else ' ' + unit}",
            "unit": unit, "verdict": verdict}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _int8_figure(results: dict[str, dict[str, Any]]) -> float | None:
    """Decode tok/s of our int8 run: the default when it is int8, else the int8 fast mode."""
    for name in ("ours", "ours-fast"):
        r = results.get(name) or {}
        if r.get("quantize") == "int8" or (name == "ours-fast" and r.get("fast_options") == "quantize=int8"):
            return r.get("decode_tok_s")
    return None


def evaluate(results: dict[str, dict[str, Any]], parts: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target of issue 15, from compare.py's engine results and the parts' JSON."""
    rows = []
    busy = parts.get("busy") or {}
    for t in busy.get("targets") or [{"target": "busy core: adaptive >= best fixed count", "ratio": None}]:
        rows.append(_row(f"1. {t['target']}", t.get("ratio"), ">=", 0.95))
    app = (parts.get("app") or {}).get("targets") or [{"text": "app decode >= 0.95x ask's", "bound": 0.95},
                                                        {"text": "app screen updates while streaming", "bound": 9.5}]
    rows.append(_row(f"2. {app[0]['text']}", app[0].get("measured"), ">=", app[0]["bound"]))
    rows.append(_row(f"2. {app[1]['text']}", app[1].get("measured"), ">=", app[1]["bound"], "/s"))
    ours = results.get("ours") or {}
    for key, label in (("short_prefill_tok_s", "~40-token"), ("long_prefill_tok_s", "~3.4K-token")):
        theirs = [(results.get(e) or {}).get(key) for e in ("hf-fp32", "hf-bf16")]
        best = max((v for v in theirs if v), default=None)
        rows.append(_row(f"3. prefill, {label} prompt >= faster of transformers fp32/bf16",
                         _ratio(ours.get(key), best), ">=", PREFILL_BOUND))
    int4 = (results.get("ours-int4") or {}).get("decode_tok_s")
    rows.append(_row(f"4. int4 decode >= {INT4_BOUND}x int8", _ratio(int4, _int8_figure(results)), ">=", INT4_BOUND))
    long = ((parts.get("long") or {}).get("targets") or [{"text": "decode at ~3.4K cached tokens", "bound": 0.8}])[0]
    rows.append(_row(f"5. {long['text']}", long.get("measured"), ">=", long["bound"]))
    cold = (results.get("cold-start") or {}).get("wall_s")
    rows.append(_row(f"6. cold start of `qwenchat ask` to first token <= {COLD_START_BOUND:g} s", cold, "<=",
                     COLD_START_BOUND, "s"))
    return rows


def fmt_measured(row: dict[str, Any]) -> str:
    value = row["measured"]
    if value is None:
        return "-"
    return f"{value:.2f}x" if row["unit"] == "x" else f"{value:.2f} {row['unit']}"


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    return (["target (issue 15)", "measured", "bound", "verdict"],
            [[r["text"], fmt_measured(r), r["bound"], r["verdict"]] for r in rows])


def parts_lines(parts: dict[str, Any]) -> list[str]:
    """One line per part that ran, with its figures (each script's own report has more)."""
    lines = []
    if app := parts.get("app"):
        lines.append(f"app against ask (alternating runs, medians): ask {app['ask_tok_s']:.1f} tok/s, app "
                     f"{app['app_tok_s']:.1f} tok/s ({app['ratio']:.2f}x), app screen updates "
                     f"{app['updates_per_s']:.1f}/s; load average {app['load_before']:.2f} -> {app['load_after']:.2f}")
    if long := parts.get("long"):
        lines.append(f"decode at {long['long_context']} cached tokens {long['long_tok_s']:.1f} tok/s against "
                     f"{long['short_tok_s']:.1f} at {long['short_context']} ({long['ratio']:.2f}x); load average "
                     f"{long['load_before']:.2f} -> {long['load_after']:.2f}")
    if busy := parts.get("busy"):
        for cond, cols in (busy.get("tok_s") or {}).items():
            med = {k: sorted(v)[len(v) // 2] for k, v in cols.items() if v}
            lines.append(f"{cond} (tok/s, median): " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
    return lines
