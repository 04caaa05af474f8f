"""`qwenchat import FILE`: convert a Qwen2 GGUF file into a model directory qwenchat can load.

The import lands in `qwenchat.paths.imported_models_dir() / NAME` (NAME from `--name`, else
the file's `general.name`, slugified) and is then usable as `qwenchat ask -m NAME`. The work
itself is `qwenchat.engine.gguf.import_gguf`; this module only picks the place, refuses to
overwrite an earlier import unless `--force`, and shows progress on stderr. Imports no torch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from qwenchat.cli.app import app

DTYPES = ("float32", "bfloat16", "float16")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def slugify(text: str) -> str:
    """'Qwen2.5 Coder 0.5B Instruct AWQ' -> 'qwen2.5-coder-0.5b-instruct-awq'."""
    slug = re.sub(r"[^a-z0-9._]+", "-", text.strip().lower())
    return re.sub(r"-{2,}", "-", slug).strip("-._")


def default_name(gguf_path: Path) -> str:
    from qwenchat.engine.gguf import read_gguf_fields

    general = read_gguf_fields(gguf_path, {"general.name"}).get("general.name")
    name = slugify(general) if isinstance(general, str) else ""
    return name or slugify(gguf_path.stem) or "imported-model"


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A GGUF file of a Qwen2/Qwen2.5 model.")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Name to use it by (default: from the file).")
    ] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", help="Weight dtype to store: float32, bfloat16 or float16.")
    ] = "float32",
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an earlier import of that name.")] = False,
) -> None:
    """Convert a GGUF model file (llama.cpp format) into a model qwenchat can run."""
    from qwenchat.errors import QwenchatError, UsageError
    from qwenchat.paths import imported_models_dir, user_path

    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}", f"choose one of: {', '.join(DTYPES)}")
    file = user_path(file)
    if not file.is_file():
        raise UsageError(f"no such file: {file}", "pass the path of a .gguf file")
    if name is not None and not _NAME_OK.match(name):
        raise UsageError(
            f"invalid --name {name!r}",
            "use letters, digits, '.', '_' and '-' (no slashes), starting with a letter or digit",
        )
    name = name or default_name(file)
    target = imported_models_dir() / name
    if target.exists() and not force:
        raise QwenchatError(
            f"a model named {name!r} is already imported at {target}",
            "pass --force to replace it, or --name to import under another name",
        )

    _run_import(file, target, dtype)
    typer.echo(f"Imported {file.name} as {name!r} ({dtype}) into {target}")
    typer.echo(f'Use it with: qwenchat ask -m {name} "your question"   (or: qwenchat -m {name})')


def _run_import(file: Path, target: Path, dtype: str) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from qwenchat.engine.gguf import import_gguf

    console = Console(file=sys.stderr)
    if not console.is_terminal:  # piped or captured stderr: no bar, just the result
        import_gguf(file, target, dtype=dtype)
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"reading {file.name}", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, description="writing weights", completed=done, total=total)

        import_gguf(file, target, dtype=dtype, progress=report)
        progress.update(task, description="done")
