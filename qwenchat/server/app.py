"""The ASGI app factory: routes, error handlers, the access log, CORS only when asked for.

`create_app(backend, config)` builds a Starlette app around a `Backend` (loaded now or later)
and starts the generation queue's thread; `app.state.queue.close()` stops it (see `run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from qwenchat.server import routes
from qwenchat.server.access_log import AccessLog
from qwenchat.server.backend import Backend
from qwenchat.server.body import DEFAULT_MAX_BODY
from qwenchat.server.errors import APIError, handle_api_error, handle_http_error, handle_unexpected
from qwenchat.server.jobs import GenerationQueue
from qwenchat.server.text_batches import DEFAULT_STREAM_INTERVAL_S

DEFAULT_QUEUE_SIZE = 16


@dataclass(frozen=True)
class ServerConfig:
    api_key: str | None = None
    max_body: int = DEFAULT_MAX_BODY  # bytes
    queue_size: int = DEFAULT_QUEUE_SIZE  # requests that may wait while one generates
    cors_origins: tuple[str, ...] = ()  # none: browsers on other origins are not let in
    retry_after_s: int = 2
    stream_interval_s: float = DEFAULT_STREAM_INTERVAL_S  # streamed text goes out at most this often (0: every token)


def create_app(backend: Backend, config: ServerConfig | None = None, log: TextIO | None = None) -> Starlette:
    config = config or ServerConfig()
    middleware = [Middleware(AccessLog, out=log)]
    if config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(
        routes=[
            Route("/", routes.index, methods=["GET"]),
            Route("/v1", routes.index, methods=["GET"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/v1/models", routes.models, methods=["GET"]),
            Route("/v1/models/{model:path}", routes.model, methods=["GET"]),
            Route("/v1/chat/completions", routes.chat_completions, methods=["POST"]),
            Route("/v1/completions", routes.completions, methods=["POST"]),
            Route("/tokenize", routes.tokenize, methods=["POST"]),
        ],
        middleware=middleware,
        exception_handlers={APIError: handle_api_error, HTTPException: handle_http_error, Exception: handle_unexpected},
    )
    app.state.backend, app.state.config = backend, config
    app.state.queue = GenerationQueue(config.queue_size, config.stream_interval_s)
    return app
