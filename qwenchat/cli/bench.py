"""`qwenchat bench`: measure the engine on this machine (load, first token, prefill, decode,
follow-up turn with KV reuse, peak memory) and print a table, or one JSON object with --json.

The measuring is `qwenchat.bench.run`; this module resolves the model, shows progress on
stderr and formats the result. Imports no torch until the command runs.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from qwenchat.cli.app import app, settings_with_flags
from qwenchat.config import QUANTIZE_HELP


@app.command(help="Measure load time, first-token latency, prefill/decode speed, KV reuse and peak memory.")
def bench(
    model: Optional[str] = typer.Option(None, "-m", "--model", help="Alias, Hub repo id, local directory or .gguf file."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help=QUANTIZE_HELP
    ),
    quick: bool = typer.Option(False, "--quick", help="Small workloads (a smoke run, not comparable figures)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    from qwenchat import bench as measure
    from qwenchat.models import resolve_model

    settings = settings_with_flags({"model": model, "device": device, "dtype": dtype})
    resolved = resolve_model(settings.model, progress=_download_progress())
    workload = measure.QUICK if quick else measure.FULL
    result = _with_progress(
        lambda step: measure.run(
            resolved.path, device=settings.device, dtype=settings.dtype, quantize=quantize,
            workload=workload, model_name=resolved.name, progress=step,
        )
    )
    if as_json:
        sys.stdout.write(json.dumps(measure.as_json(result)) + "\n")
    else:
        _print_table(result, measure.rows(result), quick)


def _download_progress():
    from qwenchat.cli.models import RichDownloadProgress

    return RichDownloadProgress()


def _with_progress(work):
    """Run `work(step)` with a spinner on stderr naming the current step (plain lines if stderr
    is not a terminal)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return work(lambda name: None)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    steps = 5
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("[dim]{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("starting", total=steps)
        seen = [0]

        def step(name: str) -> None:
            progress.update(task, description=name, completed=seen[0])
            seen[0] += 1

        return work(step)


def _print_table(result: dict, rows: list[tuple[str, str]], quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"qwenchat bench: {result['model']} on {result['device']}, {result['dtype']}"
    if result.get("quantize"):
        title += f", {result['quantize']} weights"
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    console = Console()
    console.print(table)
    note = f"torch {result['torch']}, {result['threads']} threads"
    if quick:
        note += "; --quick: small workloads, not comparable with full runs"
    console.print(f"[dim]{note}[/dim]")
