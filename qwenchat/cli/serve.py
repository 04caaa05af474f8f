"""`qwenchat serve`: the model behind an OpenAI-compatible HTTP API (see qwenchat/server/).

Settings layer as everywhere (config file < environment < flags); the config file's sampling
settings are the defaults of requests that leave a field out. Nothing here imports torch or the
server's dependencies until the command runs, and a missing `serve` extra is named.
"""

from __future__ import annotations

from typing import Optional

import typer

from qwenchat.cli.app import app, settings_with_flags
from qwenchat.config import QUANTIZE_HELP
from qwenchat.errors import UsageError
from qwenchat.remote.reference import is_remote
from qwenchat.server.text_batches import DEFAULT_STREAM_INTERVAL_S  # stdlib only, like the records it uses


@app.command(help="Serve the model over the OpenAI API (chat completions, completions, models) on 127.0.0.1.")
def serve(
    model: Optional[str] = typer.Option(None, "-m", "--model", help="Alias, Hub repo id, local directory or .gguf file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; other than loopback needs --api-key."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port; the URL printed names it)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="QWENCHAT_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on /v1 (or set QWENCHAT_API_KEY)."),
    unprotected: bool = typer.Option(False, "--unprotected", help="Listen beyond loopback with no API key: anyone who reaches the port can use it."),
    save: bool = typer.Option(False, "--save", help="Store each conversation in the history, marked as from the API."),
    queue_size: int = typer.Option(16, "--queue-size", min=0, help="Requests that may wait while one generates; more get 503."),
    stream_interval: float = typer.Option(DEFAULT_STREAM_INTERVAL_S, "--stream-interval", min=0.0, max=5.0, metavar="SECONDS",
                                          help="Send streamed text at most this often, several tokens per event "
                                               "(0: every token, which on a small CPU costs the engine several % of its speed)."),
    max_body: int = typer.Option(8 << 20, "--max-body", min=1024, metavar="BYTES", help="Largest request body; larger gets 413."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Let browser pages from this origin call the API (repeatable; none by default)."),
    kv_budget: Optional[str] = typer.Option(None, "--kv-budget", metavar="SIZE",
                                            help="Memory for the KV caches of recent conversations kept for reuse, e.g. 512M or 2G "
                                                 "(default 1G; 0: only the current one; config key kv_budget)."),
    context_limit: Optional[int] = typer.Option(None, "--context-limit", help="Context window in tokens."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help=QUANTIZE_HELP),
) -> int:
    from qwenchat.server import extra

    extra.require()
    from qwenchat.cli.models import RichDownloadProgress
    from qwenchat.server.app import ServerConfig
    from qwenchat.server.run import ServeOptions
    from qwenchat.server.run import serve as run_server

    settings = settings_with_flags(dict(model=model, device=device, dtype=dtype, quantize=quantize,
                                        context_limit=context_limit, kv_budget=kv_budget))
    if is_remote(settings.model):
        raise UsageError(f"{settings.model} is a server: qwenchat serve runs a local model",
                         "point your clients at that server directly, or give -m a local model")
    config = ServerConfig(api_key=api_key or None, max_body=max_body, queue_size=queue_size,
                          cors_origins=tuple(cors_origin), stream_interval_s=stream_interval)
    opts = ServeOptions(host=host, port=port, unprotected=unprotected, save=save, config=config)
    return run_server(settings, opts, progress=RichDownloadProgress())
