"""`qwenchat` (no subcommand) and `qwenchat chat`: open the terminal chat app.

Settings layer as everywhere: config file < environment < flags. The model is loaded (and
downloaded if needed) inside the app, in a worker, so the window opens at once. Nothing here
imports torch or textual until the app starts.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from qwenchat.cli.app import app, settings_with_flags
from qwenchat.config import QUANTIZE_HELP
from qwenchat.errors import UsageError

ModelOpt = typer.Option(None, "-m", "--model", help="Model alias, Hub repo id, local folder, .gguf file, or a server's URL (http://host:8000/v1[#MODEL]).")
ApiKeyOpt = typer.Option(None, "--api-key", help="Key for a server (else config api_key, QWENCHAT_API_KEY, OPENAI_API_KEY). Never stored.")
ContinueOpt = typer.Option(False, "-c", "--continue", help="Continue the most recent conversation.")
CidOpt = typer.Option(None, "--cid", help="Continue the conversation with this id.")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps.")
DtypeOpt = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16.")
ThemeOpt = typer.Option(None, "--theme", help="Theme name (saved choice otherwise).")
QuantizeOpt = typer.Option(None, "--quantize", help=QUANTIZE_HELP)


def make_session_factory(settings: Any) -> Any:
    """A factory the app calls in a worker: (model name, store, progress) -> ChatSession."""

    def factory(model: str | None, store: Any, progress: Any) -> Any:
        from qwenchat.remote.reference import is_remote
        from qwenchat.session import ChatSession
        from qwenchat.startup import find_local, load_engine, options_from_settings

        s = settings.merged({"model": model}) if model else settings
        resolved = None
        if not is_remote(s.model):  # found (downloaded) first, so the panel can say what the load does
            resolved, converting = find_local(s, progress)
            if converting:
                progress.on_loading(converting)
        engine, label = load_engine(s, progress=progress, resolved=resolved)
        return ChatSession(engine, store, model_label=label, options=options_from_settings(s))

    return factory


def open_tui(model: str | None, cont: bool, cid: int | None, device: str | None, dtype: str | None,
             theme: str | None = None, api_key: str | None = None, quantize: str | None = None) -> None:
    from qwenchat.startup import choose_start
    from qwenchat.store import Store

    settings = settings_with_flags({"device": device, "dtype": dtype, "quantize": quantize, "api_key": api_key})
    with Store.open() as store:
        start = choose_start(store, model, cont, cid)  # the conversation's own model unless -m
    from qwenchat.tui import run_app

    run_app(make_session_factory(settings), model=start.model, conversation_id=start.conversation_id,
            theme=theme, api_key=settings.api_key)  # the model picker asks servers with it


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    model: Optional[str] = ModelOpt,
    cont: bool = ContinueOpt,
    cid: Optional[int] = CidOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    quantize: Optional[str] = QuantizeOpt,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Chat with a local Qwen2/Qwen2.5 model. With no command, opens the chat app."""
    if ctx.invoked_subcommand is None:
        open_tui(model, cont, cid, device, dtype, api_key=api_key, quantize=quantize)
        return
    given = {"-m": model, "--cid": cid, "--device": device, "--dtype": dtype, "--quantize": quantize,
             "--api-key": api_key and "KEY"}
    given = {flag: value for flag, value in given.items() if value is not None} | ({"-c": ""} if cont else {})
    if given:  # they were the app's, and silently dropped: `qwenchat -m coder ask` used the default model
        flag, value = next(iter(given.items()))
        command = ctx.invoked_subcommand
        sub = ctx.command.get_command(ctx, command)
        takes = sub is not None and any(flag in p.opts for p in sub.params)
        where = f"put it after the command: qwenchat {command} {flag} {value} ..." if takes else \
            f"`{command}` takes no {flag} (`qwenchat {command} --help` lists its options)"
        raise UsageError(f"{flag} before the command `{command}` is the chat app's option, not `{command}`'s",
                         where.replace("  ", " "))


@app.command("chat")
def chat(
    model: Optional[str] = ModelOpt,
    cont: bool = ContinueOpt,
    cid: Optional[int] = CidOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    quantize: Optional[str] = QuantizeOpt,
    theme: Optional[str] = ThemeOpt,
    api_key: Optional[str] = ApiKeyOpt,
) -> None:
    """Open the chat app (F1 lists the keys)."""
    open_tui(model, cont, cid, device, dtype, theme, api_key, quantize)
