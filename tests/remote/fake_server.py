"""A scripted OpenAI-compatible server for tests: `http.server` in a thread on 127.0.0.1 (a free
port). `routes` maps "METHOD /path" to a handler `(request) -> Response`; `models` fills the
default GET /v1/models. Every request is recorded (`requests`) with its JSON body."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Response:
    status: int = 200
    body: Any = None  # a dict/list (sent as JSON) or a str/bytes (sent as they are)
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    events: Iterable[Any] | None = None  # an SSE stream: dicts (JSON) or str (raw data), then [DONE]
    done: bool = True  # end the stream with [DONE]
    cut: bool = False  # drop the connection after the events, mid-stream (no end of the chunked body)
    delay: float = 0.0  # seconds before each event (and before the headers of a non-stream)
    hang_up: bool = False  # close the connection without answering (a server dying on the request)


Handler = Callable[[Request], Response]


def chunk(text: str | None = None, finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A chat.completion.chunk as vLLM and OpenAI send them."""
    choices = [] if text is None and finish is None else [
        {"index": 0, "delta": {"content": text} if text is not None else {}, "finish_reason": finish}]
    obj: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": choices}
    if usage is not None:
        obj["usage"] = usage
    return obj


def reply_events(*pieces: str, usage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = [chunk(p) for p in pieces] + [chunk(finish="stop")]
    return out + ([chunk(usage=usage)] if usage else [])


def error(status: int, message: str, param: str | None = None, code: str | None = None, **headers: str) -> Response:
    return Response(status, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                       "code": code}}, headers=headers)


class FakeServer:
    def __init__(self, models: list[dict[str, Any]] | None = None) -> None:
        self.models = models if models is not None else [{"id": "m", "object": "model", "owned_by": "test"}]
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def handle(self, req: Request) -> Response:
        self.requests.append(req)
        route = self.routes.get(f"{req.method} {req.path}")
        if route is not None:
            return route(req)
        if req.method == "GET" and req.path == "/v1/models":
            return Response(200, {"object": "list", "data": self.models})
        return error(404, f"no route {req.path}")

    def reply(self, *pieces: str, **kw: Any) -> None:
        """POST /v1/chat/completions streams `pieces` (then a usage chunk when `usage` is given)."""
        self.routes["POST /v1/chat/completions"] = lambda req: Response(events=reply_events(*pieces, **kw))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            path = self.path.split("?")[0]
            res = server.handle(Request(method, path, {k.lower(): v for k, v in self.headers.items()}, body))
            try:
                self._send(res)
            except OSError:  # the client went away (a cancel): nothing to do
                pass

        def _send(self, res: Response) -> None:
            if res.hang_up:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if res.events is None:
                if res.delay:
                    time.sleep(res.delay)
                data, kind = _encode(res.body)
                self.send_response(res.status)
                self.send_header("content-type", res.content_type or kind)
                self.send_header("content-length", str(len(data)))
                for k, v in res.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(res.status)
            self.send_header("content-type", res.content_type or "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event in res.events:
                if res.delay:
                    time.sleep(res.delay)
                text = event if isinstance(event, str) else json.dumps(event)
                self._chunk(f"data: {text}\n\n".encode())
            if res.cut:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            if res.done:
                self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return H


def _encode(body: Any) -> tuple[bytes, str]:
    if isinstance(body, (dict, list)):
        return json.dumps(body).encode(), "application/json"
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    return (body or "").encode(), "text/plain"
