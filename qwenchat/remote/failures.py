"""The `openai` client's exceptions -> a `RemoteError` that names the problem and its fix.

The transport's own errors (refused, unknown host, TLS) are found on the exception's chain;
HTTP statuses by the client's classes. A server's error text is quoted scrubbed of the key."""

from __future__ import annotations

import socket
import ssl
from typing import Any

from qwenchat.remote.errors import (AuthError, BusyError, ConnectError, FormatError, NotFoundError, RefusedError,
                                    RemoteError, RemoteTimeoutError, ServerFailedError, StreamCutError, scrub)
from qwenchat.remote.reference import RemoteRef


class ServerSaid(Exception):
    """An error event in a stream that the client let through (stream.py raises it; translated
    here, where it is known whether the reply had begun)."""


KEY_HINT = "set QWENCHAT_API_KEY (or OPENAI_API_KEY), the config's api_key, or pass --api-key"


def translate(exc: BaseException, ref: RemoteRef, key: str | None, *, model: str | None = None,
              timeout_s: float | None = None, streaming: bool = False) -> RemoteError:
    """The RemoteError for `exc`, raised while talking to `ref` (for `model`).
    streaming: the reply had begun, so a lost connection cut it off."""
    import openai

    if isinstance(exc, RemoteError):
        return exc
    server = ref.base_url
    if isinstance(exc, openai.APITimeoutError) or _transport(exc) and "timeout" in type(exc).__name__.lower():
        if any(type(e).__name__ == "ConnectTimeout" for e in _chain(exc)):
            return ConnectError(f"no connection to {ref.host}: it did not answer in time",
                                "check the URL's host and port, and that no firewall drops the connection")
        return _timeout(server, timeout_s, streaming)
    if isinstance(exc, openai.APIConnectionError) or _transport(exc):
        return _connection(exc, ref, streaming)
    if isinstance(exc, openai.APIStatusError):
        return _status(exc.status_code, server_text(exc.body, exc.message), ref, key, model, _code(exc))
    if isinstance(exc, openai.APIError):  # an error event in the stream
        return reported(server, server_text(exc.body, exc.message), key, streaming)
    if isinstance(exc, ServerSaid):
        return reported(server, str(exc), key, streaming)
    if isinstance(exc, ValueError):  # a stream event that is not JSON
        return not_openai(server, "a stream event that is not JSON")
    raise exc


def _timeout(server: str, timeout_s: float | None, streaming: bool) -> RemoteError:
    within = f" within {timeout_s:g} s" if timeout_s else ""
    if streaming:
        return StreamCutError(f"the reply from {server} stopped: no more text came{within}",
                              "the partial reply is kept; try again, or raise request_timeout in the config")
    return RemoteTimeoutError(f"{server} sent no answer{within}",
                              "the server may be busy or loading a model; try again, or raise request_timeout "
                              "in the config (seconds to the first token)")


def _connection(exc: BaseException, ref: RemoteRef, streaming: bool) -> RemoteError:
    server = ref.base_url
    if streaming:
        return StreamCutError(f"the connection to {server} was lost mid-reply",
                              "the partial reply is kept; check the server and continue or regenerate")
    chain, cause = _chain(exc), _root(exc)
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in repr(cause).lower():
        return ConnectError(f"TLS failed with {ref.host}: {_reason(cause)}",
                            "check the URL's scheme (http:// for a server without TLS) and the server's certificate")
    if any(isinstance(e, socket.gaierror) for e in chain) or "name or service not known" in str(cause).lower():
        return ConnectError(f"unknown host {ref.host.rsplit(':', 1)[0]!r}",
                            "check the server's name in the URL, or use its IP address")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in str(cause).lower():
        return ConnectError(f"connection refused by {ref.host}: no server is listening there",
                            "start the server, or check the URL's host and port")
    if _dropped(chain):
        return ConnectError(f"{ref.host} closed the connection before the reply began: {_reason(cause)}",
                            "the server may have stopped, restarted or crashed on the request; check it (and its "
                            "log), then send again")
    return ConnectError(f"cannot connect to {server}: {_reason(cause)}", "check that the server is running and reachable")


def _dropped(chain: list[BaseException]) -> bool:
    """The connection was made, then closed or reset by the server (not refused)."""
    names = {type(e).__name__ for e in chain}
    words = " ".join(str(e).lower() for e in chain)
    return (any(isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)) for e in chain)
            or bool(names & {"RemoteProtocolError", "ReadError"}) or "disconnected" in words or "reset by peer" in words)


def _status(status: int, text: str, ref: RemoteRef, key: str | None, model: str | None, code: str) -> RemoteError:
    server, said = ref.base_url, f" (the server says: {scrub(text, key)})" if text else ""
    if status == 401:
        if not key:  # what the server says is about the placeholder the client sends (client.NO_KEY)
            return AuthError(f"{server} needs an API key and none was given", KEY_HINT)
        return AuthError(f"{server} refused the API key (401){said}", "check the key: " + KEY_HINT)
    if status == 403:
        return AuthError(f"{server} does not allow this key to do that (403){said}",
                         "use a key with access to this model, or ask the server's admin")
    if status == 404:
        if model and ("model" in text.lower() or "model" in code):
            return NotFoundError(f"{server} does not serve model {model!r}{said}",
                                 f"list what it offers with `qwenchat models --server {server}`, then use -m {server}#ID")
        return NotFoundError(f"{server} has no such endpoint (404){said}",
                             "check the URL: it is the API's base, which usually ends in /v1")
    if status == 429:
        return BusyError(f"{server} is busy (429, too many requests){said}", "wait a moment and try again")
    if status >= 500:
        return ServerFailedError(f"{server} failed ({status}){said}", "try again; if it persists, check the server's log")
    if "context" in text.lower() or status == 413:
        return RefusedError(f"{server} refused the request ({status}): too long for the model{said}",
                            "start a new conversation or shorten the message, or lower the max tokens setting")
    return RefusedError(f"{server} refused the request ({status}){said}", "check the settings sent with it")


def reported(server: str, text: str, key: str | None, streaming: bool) -> RemoteError:
    """The server sent an error in place of (the rest of) the stream."""
    said = scrub(text, key) or "no details"
    if streaming:
        return StreamCutError(f"{server} reported an error mid-reply: {said}",
                              "the partial reply is kept; continue or regenerate it")
    return ServerFailedError(f"{server} reported an error: {said}", "try again; if it persists, check the server's log")


def not_openai(server: str, what: str) -> FormatError:
    return FormatError(f"{server} did not answer in the OpenAI format (it sent {what})",
                       "check the URL: it must be an OpenAI-compatible API's base, usually ending in /v1")


def server_text(body: Any, fallback: str = "") -> str:
    """A server's error message from its JSON body (`{"error": {"message": ...}}`, `{"detail": ...}`,
    ...) or its raw text."""
    if isinstance(body, dict):
        for k in ("message", "detail", "error", "msg"):
            v = body.get(k)
            if isinstance(v, str) and v:
                return v
            if isinstance(v, dict):
                return server_text(v, fallback)
            if isinstance(v, list) and v and all(isinstance(d, dict) for d in v):  # FastAPI's validation errors
                return "; ".join(f"{_loc(d)}: {d.get('msg', 'invalid')}" if _loc(d) else str(d.get("msg")) for d in v)
        return fallback
    if isinstance(body, str) and body.strip():
        return body if "<" not in body[:200] else "an HTML page"
    return fallback


def refused_param(body: Any) -> str | None:
    """The field a 400/422 body names: OpenAI's `param`, or FastAPI's first `detail[].loc`."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("param"), str):
        return body["param"]
    detail = body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return _loc(detail[0]) or None
    return None


def _loc(d: dict[str, Any]) -> str:
    loc = d.get("loc")
    parts = [str(p) for p in loc if p != "body"] if isinstance(loc, list) else []
    return ".".join(parts)


def _transport(exc: BaseException) -> bool:
    """An error of the HTTP transport itself: older `openai` releases let those raised while a
    stream is read escape unwrapped."""
    return any(c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore") for c in type(exc).__mro__)


def _code(exc: Any) -> str:
    return str(getattr(exc, "code", "") or "").lower()


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes, outermost first."""
    out = [exc]
    while (nxt := out[-1].__cause__ or out[-1].__context__) is not None and nxt not in out:
        out.append(nxt)
    return out


def _root(exc: BaseException) -> BaseException:
    """The innermost cause (the socket's or TLS's own error)."""
    return _chain(exc)[-1]


def _reason(exc: BaseException) -> str:
    return scrub(str(exc) or type(exc).__name__, None)
