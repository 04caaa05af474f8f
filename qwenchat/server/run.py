"""Running the server: the bind check, the listening socket, the model loading in the
background, uvicorn, and a clean stop.

- Binds 127.0.0.1 by default; any address that is not loopback needs an API key (or
  `--unprotected`, which says what it means), because anyone who reaches the port could use it.
- The socket is bound here, before uvicorn starts, so a port in use is one clear error and
  `--port 0` picks a free port (the printed URL names it).
- The model loads on another thread while the server already answers (/health: "loading").
  A failed load stops the server with the load's own error.
- SIGINT/SIGTERM: no new requests, the one generating is cancelled, waiting ones get a 503, and
  the command returns 0 (uvicorn would re-raise the signal after shutting down; not here).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TextIO

from qwenchat.errors import QwenchatError, UsageError
from qwenchat.server.app import ServerConfig
from qwenchat.server.routes import STOP_GRACE_S

LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    unprotected: bool = False  # listen beyond loopback without an API key
    save: bool = False
    config: ServerConfig = field(default_factory=ServerConfig)


def serve(settings: Any, opts: ServeOptions, progress: Any = None, out: TextIO | None = None) -> int:
    import uvicorn

    from qwenchat.server.app import create_app
    from qwenchat.server.backend import Backend
    from qwenchat.startup import options_from_settings

    from qwenchat.models import check_name

    out = out or sys.stderr
    check_name(settings.model)  # before "listening": a name that means no model (found hands-on)
    check_bind(opts.host, opts.config.api_key, opts.unprotected)
    sock = bind(opts.host, opts.port)
    backend = Backend(options_from_settings(settings))
    app = create_app(backend, opts.config, log=out)
    queue = app.state.queue
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=GRACEFUL_S), on_exit=queue.close)
    _say(out, f"qwenchat serve: listening on {base_url(sock)} (loading the model…)")
    loader = threading.Thread(target=_load, args=(settings, backend, opts.save, server, ImportNote(progress, out), out),
                              name="qwenchat-load", daemon=True)
    loader.start()
    try:
        server.run(sockets=[sock])
    finally:
        queue.close()
        queue.join(timeout=5)
        sock.close()
        if backend.saver is not None:
            backend.saver.close()
    if backend.error is not None:
        raise backend.error
    _say(out, "qwenchat serve: stopped")
    return 0


# How long a stop waits for the reply being streamed to end (cancelled within a token) before
# uvicorn cuts its connection. 3 s was too short on a loaded 2-core machine, where a decode step can
# take a second or more: the client lost the connection mid-stream instead of getting the
# "cancelled, the server is stopping" event, and uvicorn printed an ERROR line.
GRACEFUL_S = STOP_GRACE_S + 1  # after the streams' own grace (routes.py)


class _Server:
    """uvicorn's Server, with our own reaction to SIGINT/SIGTERM (made lazily: uvicorn is
    imported only when serving)."""

    def __new__(cls, config: Any, on_exit: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()  # stopping on a signal is a normal end: exit 0, not the signal again
                on_exit()  # cancel the reply being generated, refuse the waiting ones

        return Server(config)


def _load(settings: Any, backend: Any, save: bool, server: Any, progress: Any, out: TextIO) -> None:
    try:
        from qwenchat.models import resolve_model
        from qwenchat.startup import load_engine

        resolved = resolve_model(settings.model, progress=progress)
        engine, label = load_engine(settings, resolved=resolved)
        for note in engine.info.notes:
            _say(out, f"warning: {note}")
        saver = None
        if save:
            from qwenchat.server.saving import Saver

            saver = Saver(engine, label)
        # listed as its name (a local folder: the folder's, as tools are set up with `my-model`, not
        # `./models/my-model`); the name given to -m and the Hub repo id are accepted too
        folder = resolved.path.name if resolved.source == "local" else None
        backend.attach(engine, [folder or label, settings.model, label, resolved.repo_id], saver)
        info = engine.info
        _say(out, f"qwenchat serve: ready, model {backend.model_ids[0]} on {info.device} "
                  f"({info.quantize if info.quantize != 'none' else info.dtype}), loaded in {info.load_s:.1f}s")
    except BaseException as e:  # noqa: BLE001 - reported by `serve` once the server has stopped
        backend.fail(e)
        server.should_exit = True


class ImportNote:
    """The start-up's download progress, plus one line when a .gguf is converted (once per file;
    it takes a minute for a 0.5B model, while the console would otherwise show nothing)."""

    def __init__(self, progress: Any, out: TextIO) -> None:
        from qwenchat.hub.progress import NullProgress

        self._progress, self._out, self._said = progress or NullProgress(), out, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._progress, name)

    def on_convert(self, name: str, done: int, total: int) -> None:
        if not self._said:
            self._said = True
            _say(self._out, f"qwenchat serve: importing {name}: writing {total / 1e9:.1f} GB of weights "
                            "(once: later starts reuse them)…")


def check_bind(host: str, api_key: str | None, unprotected: bool) -> None:
    if is_loopback(host) or api_key or unprotected:
        return
    raise UsageError(
        f"refusing to listen on {host} without an API key: anyone who can reach this machine could use the model",
        "add --api-key KEY (clients then send 'Authorization: Bearer KEY'), or --unprotected on a network you trust",
    )


def is_loopback(host: str) -> bool:
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind(host: str, port: int) -> socket.socket:
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {where}: {e.strerror or e}", "give an IP address or a known host name with --host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise QwenchatError(f"cannot listen on {where}: the port is in use", "pick another with --port (0: any free port)") from None
        if e.errno == errno.EACCES:
            raise QwenchatError(f"cannot listen on {where}: permission denied", "use a port above 1023") from None
        raise QwenchatError(f"cannot listen on {where}: {e.strerror or e}", "check --host and --port") from None
    return sock


def base_url(sock: socket.socket) -> str:
    """The URL clients on this machine use; bound to every address (0.0.0.0, ::), that is the
    loopback one, and the text says how other machines reach it."""
    host, port = sock.getsockname()[:2]
    unspecified = ipaddress.ip_address(host).is_unspecified
    shown = ("[::1]" if ":" in host else "127.0.0.1") if unspecified else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1"
    return url + " on every address (other machines: this machine's name or IP instead)" if unspecified else url


def _say(out: TextIO, text: str) -> None:
    try:
        out.write(text + "\n")
        out.flush()
    except (OSError, ValueError):
        pass
