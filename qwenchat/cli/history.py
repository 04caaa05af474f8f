"""`qwenchat history ...` and `qwenchat preset ...`: the conversation store from the shell.

Output is plain text, one record a line where that makes sense, so it pipes into grep and head.
Data goes to stdout; confirmations and notes go to stderr. Imports no torch.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from qwenchat.cli.app import app
from qwenchat.errors import StoreError, UsageError
from qwenchat.model_label import short_model

history_app = typer.Typer(
    help="Browse, search, export and import saved conversations.", no_args_is_help=True
)
preset_app = typer.Typer(help="Named system prompts (presets).", no_args_is_help=True)
app.add_typer(history_app, name="history")
app.add_typer(preset_app, name="preset")


def _open():
    from qwenchat.store import Store

    return Store.open()


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _local(stamp: str) -> str:
    """A stored UTC timestamp as local 'YYYY-MM-DD HH:MM'."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def _short_model(model: str) -> str:
    return short_model(model) or "-"


def _stdin_is_interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _confirm(question: str) -> bool:
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


@history_app.command("list")
def list_(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most N.")] = 50,
    query: Annotated[
        Optional[str], typer.Option("--query", "-q", help="Only titles or messages matching.")
    ] = None,
) -> None:
    """List conversations, most recently updated first."""
    with _open() as store:
        convs = store.list_conversations(limit=limit, query=query)
    if not convs:
        _note("no conversations yet" if not query else f"no conversations match {query!r}")
        return
    width = max(2, max(len(str(c.id)) for c in convs))
    model_w = min(28, max(5, max(len(_short_model(c.model)) for c in convs)))
    typer.echo(f"{'ID':>{width}}  {'UPDATED':16}  {'MSGS':>4}  {'MODEL':{model_w}}  TITLE")
    for c in convs:
        model = _short_model(c.model)[:model_w]
        typer.echo(
            f"{c.id:>{width}}  {_local(c.updated_at):16}  {c.message_count:>4}  "
            f"{model:{model_w}}  {c.display_title}"
        )


@history_app.command("show")
def show(conversation_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Print a conversation's active thread (Markdown)."""
    from qwenchat.store import to_markdown

    with _open() as store:
        conv = store.get_conversation(conversation_id)
        thread = store.thread(conv.id)
    text = to_markdown(conv, thread)
    typer.echo(text if text.endswith("\n") else text + "\n", nl=False)  # the note below starts a line
    hidden = conv.message_count - len(thread)
    if hidden > 0:
        _note(f"({hidden} message(s) on other branches; `history export {conv.id}` keeps them)")


@history_app.command("search")
def search(
    text: Annotated[str, typer.Argument(help="Words to find (all must match).")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most N.")] = 20,
) -> None:
    """Full-text search over every message; prints conversation id, message id and a snippet."""
    if not text.strip():
        raise UsageError("nothing to search for", "give one or more words: qwenchat history search WORDS")
    with _open() as store:
        hits = store.search(text, limit=limit)
    if not hits:
        _note(f"no messages match {text!r}")
        return
    for h in hits:
        title = h.conversation_title or "(untitled)"
        typer.echo(f"{h.conversation_id}\t#{h.message_id}\t{h.role}\t{title}: {h.snippet}")


@history_app.command("export")
def export(
    conversation_id: Annotated[Optional[int], typer.Argument(metavar="ID")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md or json.")] = "json",
    all_: Annotated[bool, typer.Option("--all", help="Every conversation (json).")] = False,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write to FILE, not stdout.")
    ] = None,
) -> None:
    """Export a conversation as Markdown or JSON (JSON keeps every branch and re-imports)."""
    from qwenchat.store import to_markdown

    fmt = fmt.lower()
    if fmt not in ("md", "json"):
        raise UsageError(f"unknown export format {fmt!r}", "use --format md or --format json")
    if all_ and conversation_id is not None:
        raise UsageError("give a conversation ID or --all, not both")
    if not all_ and conversation_id is None:
        raise UsageError("which conversation?", "give an ID (see `qwenchat history list`) or --all")
    if all_ and fmt != "json":
        raise UsageError("--all exports JSON only", "drop --format md, or export one ID as md")
    with _open() as store:
        if all_:
            text = json.dumps(store.export_all(), ensure_ascii=False, indent=2) + "\n"
        elif fmt == "json":
            data = store.export_conversation(conversation_id)
            text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        else:
            conv = store.get_conversation(conversation_id)
            text = to_markdown(conv, store.thread(conv.id))
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise StoreError(f"cannot write {output}: {e.strerror or e}", "pick a writable path") from e
    _note(f"wrote {output}")


@history_app.command("import")
def import_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A JSON export, or - for stdin.")],
    again: Annotated[bool, typer.Option("--again", help="Import chats the history already holds as copies.")] = False,
) -> None:
    """Import conversations from a JSON export (new ids; everything else kept). Chats already in
    the history (say, from importing the same file before) are skipped unless --again."""
    from qwenchat.store.import_check import LIMITS, parse

    try:  # bytes, not text: the encoding is checked (and named) by parse
        if file == "-":
            buffer = getattr(sys.stdin, "buffer", None)  # None: a text stream put in by a caller
            raw = buffer.read(LIMITS.file_bytes + 1) if buffer else sys.stdin.read().encode()
        else:
            with open(file, "rb") as fh:
                raw = fh.read(LIMITS.file_bytes + 1)
    except OSError as e:
        raise StoreError(f"cannot read {file}: {e.strerror or e}", "check the path") from e
    data = parse(raw, "stdin" if file == "-" else file)
    with _open() as store:
        result = store.import_data(data, again=again)
    for c in result.conversations:
        typer.echo(f"imported conversation {c.id}: {c.display_title}")
    if result.present:
        ids = ", ".join(str(i) for i in result.present)
        n = len(result.present)
        _note(f"skipped {n} conversation{'s' if n > 1 else ''} already in the history ({ids}); --again imports copies")


@history_app.command("rm")
def rm(
    conversation_id: Annotated[int, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a conversation and all its messages."""
    with _open() as store:
        conv = store.get_conversation(conversation_id)
        if not yes:
            if not _stdin_is_interactive():
                raise UsageError(
                    f"refusing to delete conversation {conv.id} without confirmation",
                    f"pass --yes: qwenchat history rm {conv.id} --yes",
                )
            if not _confirm(
                f"delete conversation {conv.id} ({conv.display_title!r}, "
                f"{conv.message_count} messages)?"
            ):
                _note("kept")
                return
        store.delete_conversation(conv.id)
    _note(f"deleted conversation {conv.id}")


@history_app.command("rename")
def rename(
    conversation_id: Annotated[int, typer.Argument(metavar="ID")],
    title: Annotated[str, typer.Argument(metavar="TITLE")],
) -> None:
    """Give a conversation a new title."""
    with _open() as store:
        conv = store.rename_conversation(conversation_id, title)
    _note(f"conversation {conv.id} is now {conv.title!r}")


@preset_app.command("list")
def preset_list() -> None:
    """List presets: name, then the start of the text (its lines joined; `preset show` prints it whole)."""
    with _open() as store:
        presets = store.list_presets()
    if not presets:
        _note("no presets yet; save one with: qwenchat preset save NAME TEXT")
        return
    width = max(len(p.name) for p in presets)
    for p in presets:
        first = " ".join(p.text.split())
        typer.echo(f"{p.name:{width}}  {first[:70] + ('…' if len(first) > 70 else '')}")


@preset_app.command("save")
def preset_save(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The system prompt, or - for stdin.")],
) -> None:
    """Save (or replace) a preset."""
    if text == "-":
        text = sys.stdin.read()
    with _open() as store:
        preset = store.save_preset(name, text)
    replaced = preset.created_at != preset.updated_at  # one written just now has one time for both
    _note(f"{'replaced the text of' if replaced else 'saved'} preset {preset.name!r}")


@preset_app.command("show")
def preset_show(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Print a preset's text."""
    with _open() as store:
        preset = store.get_preset(name)
    typer.echo(preset.text)


@preset_app.command("rename")
def preset_rename(
    old: Annotated[str, typer.Argument(metavar="OLD")],
    new: Annotated[str, typer.Argument(metavar="NEW")],
) -> None:
    """Rename a preset."""
    with _open() as store:
        store.rename_preset(old, new)
    _note(f"renamed preset {old!r} to {new!r}")


@preset_app.command("rm")
def preset_rm(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Delete a preset."""
    with _open() as store:
        store.delete_preset(name)
    _note(f"deleted preset {name!r}")
