"""The endpoints: /v1/chat/completions, /v1/completions, /v1/models, /tokenize and /health.

Each generation request is checked in the order a client can fix things: the API key (401),
the body (413, 400), its fields (400), the model (503 while loading, 404 if unknown), then a
place in the queue (503 with Retry-After). Errors the engine raises before the first token (a
prompt too long for the context window, a template refusing the conversation) are still a 400:
a response starts only once the first event is there. A client that goes away, while waiting
or while its reply streams, has its job cancelled.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from qwenchat.engine.errors import ConstraintError, ContextOverflowError, EngineError, SettingsError, TemplateError
from qwenchat.engine.records import Chunk, Reply
from qwenchat.errors import QwenchatError
from qwenchat.server import responses
from qwenchat.server.body import read_json
from qwenchat.server.errors import APIError, busy
from qwenchat.server.jobs import Job, QueueFull, ShuttingDown
from qwenchat.server.options import generate_options
from qwenchat.server.responses import Stamp
from qwenchat.server.schemas import ChatRequest, CompletionRequest, TokenizeRequest, parse


async def index(request: Request) -> Response:
    """/ and /v1 opened in a browser (or probed by a tool): what is here and where, not a 404."""
    base = str(request.base_url).rstrip("/") + "/v1"
    return PlainTextResponse(f"qwenchat serve is running. The OpenAI-compatible API is at {base}: GET {base}/models, "
                             f"POST {base}/chat/completions, POST {base}/completions; GET /health says whether the "
                             "model is ready.\n")


async def health(request: Request) -> Response:
    """200 {"status": "ok"} when ready, 503 {"status": "loading"} (or "failed") before; and the queue."""
    state, queue = request.app.state.backend.state, request.app.state.queue
    body = {"status": "ok" if state == "ready" else state, "generating": queue.busy, "waiting": queue.waiting}
    return JSONResponse(body, status_code=200 if state == "ready" else 503)


async def models(request: Request) -> Response:
    """The loaded model; while it loads a 503 saying so (an empty list read as "no model here")."""
    authorize(request)
    backend = request.app.state.backend
    _model(request, None)
    return JSONResponse({"object": "list", "data": [_model_object(backend, name) for name in backend.model_ids]})


async def model(request: Request) -> Response:
    """GET /v1/models/{id} (the openai client's models.retrieve); ids may hold slashes."""
    authorize(request)
    name = request.path_params["model"]
    backend = request.app.state.backend
    _model(request, None)  # a 503 while loading, not "unknown model"
    if not backend.knows(name):
        raise APIError(404, f"model {name!r} is not served here; GET /v1/models lists what is",
                       param="model", code="model_not_found")
    return JSONResponse(_model_object(backend, name))


def _model_object(backend: Any, name: str) -> dict[str, Any]:
    # max_model_len: vLLM's field for the context window, which clients read to meter a conversation
    return {"id": name, "object": "model", "created": backend.loaded_at, "owned_by": "qwenchat",
            "max_model_len": backend.context_window}


async def chat_completions(request: Request) -> Response:
    req = await _request(request, ChatRequest)
    options = generate_options(req, request.app.state.backend.base_options)
    model = _model(request, req.model)
    messages = [{"role": m.engine_role(), "content": m.text()} for m in req.messages]
    if not messages:
        raise APIError(400, "messages is empty: send at least one message", param="messages", code="invalid_value")
    continue_last = _continuing(req, messages)
    backend = request.app.state.backend
    job = _submit(request, lambda cancel: backend.chat(messages, options, cancel, continue_last))
    return await _respond(request, job, Stamp.new("chat", model), req.stream, _include_usage(req), "messages")


async def completions(request: Request) -> Response:
    req = await _request(request, CompletionRequest)
    options = generate_options(req, request.app.state.backend.base_options)
    model = _model(request, req.model)
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise APIError(400, f"prompt holds {len(prompt)} strings; send one", param="prompt", code="invalid_value")
        prompt = prompt[0]
    backend = request.app.state.backend
    job = _submit(request, lambda cancel: backend.complete(prompt, options, cancel))
    return await _respond(request, job, Stamp.new("text", model), req.stream, _include_usage(req), "prompt")


async def tokenize(request: Request) -> Response:
    """POST /tokenize (vLLM's): the token ids of a prompt or of a conversation, so a client's
    context meter counts exactly (qwenchat's own client asks; without it, it estimated)."""
    req = await _request(request, TokenizeRequest)
    _model(request, req.model)
    messages = None if req.messages is None else [{"role": m.engine_role(), "content": m.text()} for m in req.messages]
    backend = request.app.state.backend
    try:
        ids = await asyncio.to_thread(backend.tokenize, messages, req.prompt)
    except EngineError as e:
        raise engine_error(e, "messages" if messages is not None else "prompt") from None
    return JSONResponse({"count": len(ids), "max_model_len": backend.context_window, "tokens": ids})


# -- checks ----------------------------------------------------------------------------------------


def _continuing(req: ChatRequest, messages: list[dict[str, str]]) -> bool:
    """Whether the request asks to extend its last assistant message (vLLM's fields)."""
    if not req.continue_final_message:
        return False
    if req.add_generation_prompt:
        raise APIError(400, "continue_final_message and add_generation_prompt cannot both be true: "
                            "set add_generation_prompt to false to continue the last message",
                       param="add_generation_prompt", code="invalid_value")
    if messages[-1]["role"] != "assistant":
        raise APIError(400, "continue_final_message needs the last message to be the assistant's reply to extend",
                       param="messages", code="invalid_value")
    return True


def authorize(request: Request) -> None:
    key = request.app.state.config.api_key
    if not key:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        what = "is missing" if not given else "is wrong"
        raise APIError(401, f"the API key {what}: send the header 'Authorization: Bearer <key>' with the key "
                            "this server was started with (--api-key)", code="invalid_api_key")


async def _request(request: Request, model: type) -> Any:
    authorize(request)
    data = await read_json(request, request.app.state.config.max_body)
    return parse(model, data)


def _model(request: Request, name: str | None) -> str:
    backend = request.app.state.backend
    if backend.state == "loading":
        raise busy("the model is still loading; try again in a moment", request.app.state.config.retry_after_s)
    if backend.state == "failed":
        raise APIError(503, "the model failed to load; see the server's log", code="model_not_loaded")
    if not backend.knows(name):
        raise APIError(404, f"model {name!r} is not served here; this server has {', '.join(map(repr, backend.model_ids))}",
                       param="model", code="model_not_found")
    return name or backend.model_ids[0]


def _include_usage(req: Any) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _submit(request: Request, start: Callable[[Any], Any]) -> Job:
    config = request.app.state.config
    try:
        return request.app.state.queue.submit(start)
    except QueueFull:
        raise busy(f"the server is busy: one request is generating and {config.queue_size} are waiting; "
                   "retry later", config.retry_after_s) from None
    except ShuttingDown:
        raise busy("the server is shutting down", config.retry_after_s) from None


# -- responses -------------------------------------------------------------------------------------


CLIENT_GONE = 499  # nginx's status for a request its client closed: logged, never read
CUT_REPLY_WAIT_S = 2.0  # at most, for a cancelled stream's counts (a decode step or two)
STOP_GRACE_S = 9  # a stream's time to end by itself once the server stops (run.GRACEFUL_S is longer)


async def _respond(request: Request, job: Job, stamp: Stamp, stream: bool, include_usage: bool, param: str) -> Response:
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        first = await _next(job, param)
        if not stream:
            reply = first if isinstance(first, Reply) else await _last(job, param)
            _log_usage(request, reply)
            if reply.finish_reason == "cancelled":
                if getattr(request.state, "note", None) == "client disconnected":  # nobody reads this:
                    return Response(status_code=CLIENT_GONE)  # the log says so instead of a 503 "server busy"
                raise busy("the request was cancelled: the server is stopping", request.app.state.config.retry_after_s)
            return JSONResponse(responses.completion(stamp, reply))
    except BaseException:
        job.cancel()
        raise
    finally:
        watcher.cancel()
    # on a stop, the stream ends itself with the "server is stopping" event once the cancelled
    # job's Reply comes (sse-starlette cut it at once: under load the client saw the connection
    # drop, and uvicorn logged "ASGI callable returned without completing response")
    return EventSourceResponse(_events(request, job, first, stamp, include_usage, param), ping=15,
                               shutdown_grace_period=STOP_GRACE_S)


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    """Until a streamed response takes over: the client's leaving cancels the job (the body
    has been read, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            request.state.note = "client disconnected"
            job.cancel()
            return


async def _next(job: Job, param: str) -> Any:
    try:
        return await job.next()
    except StopAsyncIteration:  # cancelled before it ran: the client left
        raise APIError(503, "the request was cancelled before it started", code="cancelled") from None
    except ShuttingDown:
        raise APIError(503, "the server is shutting down", code="server_busy") from None
    except EngineError as e:
        raise engine_error(e, param) from None
    except QwenchatError as e:
        raise APIError(500, e.message, code="server_error") from None


async def _last(job: Job, param: str) -> Reply:
    while True:
        event = await _next(job, param)
        if isinstance(event, Reply):
            return event


async def _events(request: Request, job: Job, first: Any, stamp: Stamp, include_usage: bool,
                  param: str) -> AsyncIterator[str]:
    """The SSE `data:` payloads: the role, the text pieces, the finish reason, the usage, [DONE]."""
    try:
        if stamp.kind == "chat":
            yield _json(responses.chunk(stamp, None, role=True, with_usage=include_usage))
        event = first
        while True:
            if isinstance(event, Chunk):
                yield _json(responses.chunk(stamp, event.text, with_usage=include_usage))
            elif isinstance(event, Reply):
                _log_usage(request, event)
                if event.finish_reason == "cancelled":
                    yield _json(APIError(503, "the reply was cancelled (the server is stopping)").body())
                    return
                yield _json(responses.chunk(stamp, None, reply=event, with_usage=include_usage))
                if include_usage:
                    yield _json(responses.usage_chunk(stamp, event))
                break
            try:
                event = await _next(job, param)
            except APIError as e:
                yield _json(e.body())
                return
        yield "[DONE]"
    finally:
        job.cancel()  # the client went away mid-stream (or the reply is over: then a no-op)
        if getattr(request.state, "reply", None) is None:  # ended before its Reply came
            request.state.note = "server stopping" if request.app.state.queue.closed else "client disconnected"
            await _wait_for_the_cut_reply(request, job)


async def _wait_for_the_cut_reply(request: Request, job: Job) -> None:
    """The cancelled job's Reply (it comes within a decode step), so the access log line of a
    stream whose client left has its token counts too; shielded, as the stream's task is being
    cancelled, and bounded."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CUT_REPLY_WAIT_S):
        try:
            while not isinstance(event := await job.next(), Reply):
                pass
        except Exception:  # noqa: BLE001 - ended without a Reply (cancelled before it ran, failed): no counts
            return
        _log_usage(request, event)


def engine_error(e: EngineError, param: str) -> APIError:
    if isinstance(e, ContextOverflowError):
        return APIError(400, e.message, param=param, code="context_length_exceeded")
    if isinstance(e, ConstraintError):
        return APIError(400, e.message, param="response_format", code="invalid_value")
    if isinstance(e, (SettingsError, TemplateError)):
        return APIError(400, e.message, param=param, code="invalid_value")
    return APIError(500, e.message, code="server_error")


def _log_usage(request: Request, reply: Reply) -> None:
    request.state.reply = reply  # for the access log line


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)
