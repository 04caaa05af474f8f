"""`qwenchat models`, `qwenchat pull MODEL`, `qwenchat rm MODEL`: what is on disk (and what a
server offers), getting a model ahead of time (progress on stderr), and removing one. No torch
here."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

import typer

from qwenchat.cli.app import app
from qwenchat.errors import UsageError


class RichDownloadProgress:
    """A DownloadProgress drawing one rich bar on stderr: bytes, speed and time left."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def on_start(self, repo_id: str, files: Sequence[tuple[str, int]], total_bytes: int) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        if not files:
            return
        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"{repo_id}", total=total_bytes or None)

    def on_bytes(self, filename: str, file_done: int, file_total: int, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, description=filename)

    def on_note(self, text: str) -> None:
        """A damaged file repaired, a file that cannot be checked: said above the bar, if any."""
        if self._progress is not None:
            self._progress.console.print(f"note: {text}", markup=False, highlight=False)
        else:
            _err(f"note: {text}")

    def on_finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@app.command("models")
def models_command(
    server: Optional[str] = typer.Option(None, "--server", metavar="URL", help="List the models this OpenAI-compatible server offers (vLLM, llama.cpp, Ollama, qwenchat serve)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Key for the server (else config api_key, QWENCHAT_API_KEY, OPENAI_API_KEY)."),
) -> None:
    """List the model aliases and what is downloaded or imported; with --server (or a server URL
    configured as the model), the models that server offers."""
    from qwenchat.cli.app import settings_with_flags
    from qwenchat.remote.reference import is_remote

    settings = settings_with_flags({"api_key": api_key})
    if server is None:
        _print_table(*_local_rows())
        if not is_remote(settings.model):
            return
        _out("")
    _print_table(*_server_rows(server or settings.model, settings))


def _local_rows() -> tuple[tuple[str, ...], list[tuple[str, ...]], str | None]:
    from qwenchat import hub
    from qwenchat.models import list_models

    header = ("NAME", "REPO", "SIZE", "OFFLINE", "LOCATION")
    table = [
        (
            row.name + (" (default)" if row.default else ""),
            row.repo_id or (row.description if row.source in ("folder", "file") else f"imported: {row.description}"),
            hub.human_size(row.size) if row.size is not None else "-",
            "yes" if row.offline else "no",
            str(row.path) if row.path else "missing" if row.source in ("folder", "file") else "not downloaded",
        )
        for row in list_models()
    ]
    return header, table, None


def _server_rows(url: str, settings) -> tuple[tuple[str, ...], list[tuple[str, ...]], str | None]:
    """What the server offers (RemoteError when it cannot be asked); USE is the -m value."""
    from qwenchat.remote.client import list_models
    from qwenchat.remote.reference import RemoteRef, api_key

    ref = RemoteRef.parse(url)
    timeout = settings.request_timeout or 30.0
    offered = list_models(ref, api_key(settings.api_key), timeout)
    table = [
        (m.id, str(m.context_window) if m.context_window else "-", m.owned_by or "-", f"{ref.base_url}#{m.id}")
        for m in offered
    ]
    return ("ID", "CONTEXT", "OWNED BY", "USE WITH -m"), table, f"models on {ref.base_url}"


def _print_table(header: tuple[str, ...], table: list[tuple[str, ...]], title: str | None) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(box=None, header_style="bold", title=title, title_justify="left")
        for col in header:
            t.add_column(col, no_wrap=col in ("NAME", "SIZE", "OFFLINE", "CONTEXT"), overflow="fold",
                         min_width=20 if col in ("LOCATION", "USE WITH -m") else None)
        for cells in table:
            t.add_row(*cells)
        Console().print(t)
    else:  # pipes and scripts: one tab-separated line per model
        for cells in (header, *table):
            _out("\t".join(cells))


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


@app.command("pull")
def pull_command(model: str = typer.Argument(..., help="An alias, owner/name[@revision], or a .gguf file.")) -> None:
    """Download a model ahead of time (or import a .gguf file); re-checks the files already
    downloaded and fetches a damaged one again."""
    from qwenchat import hub
    from qwenchat.models import repo_ref, resolve_model

    _refuse_server(model, "download")
    ref = repo_ref(model)
    if ref is None:  # a path, a .gguf file or an imported name: resolving imports it if needed
        resolved = resolve_model(model)
        _err(f"{resolved.name}: ready at {resolved.path}")
        return
    repo_id, revision, display = ref
    snap = hub.download_snapshot(repo_id, revision, progress=RichDownloadProgress(), display_name=display,
                                verify_cached=True)
    _err(f"{display}: ready at {snap.path} (commit {snap.commit[:12]})")


@app.command("rm")
def rm_command(
    model: str = typer.Argument(..., help="A downloaded alias or repo id, or an imported model's name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove a downloaded or imported model from disk."""
    from qwenchat import hub
    from qwenchat.models import plan_removal, remove

    _refuse_server(model, "remove")
    plan = plan_removal(model)
    what = f"{plan.name} ({hub.human_size(plan.size)} at {plan.path})"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to remove {plan.name} without confirmation",
                             hint=f"run `qwenchat rm {model} --yes` to remove it from a script")
        if not typer.confirm(f"Remove {what}?", default=False, err=True):
            _err("nothing removed")
            return
    freed = remove(plan)
    _err(f"removed {plan.name}, freed {hub.human_size(freed)}")


def _refuse_server(model: str, verb: str) -> None:
    """A server's URL names a model that is not on this machine (a usage error saying so)."""
    from qwenchat.remote.reference import is_remote

    if is_remote(model):
        raise UsageError(f"{model.partition('#')[0]} is a server: there is nothing here to {verb}, its models run there",
                         f"use it as it is (qwenchat ask -m {model}); list its models with"
                         f" qwenchat models --server {model.partition('#')[0]}")
