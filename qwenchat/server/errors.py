"""OpenAI's error body (`{"error": {"message", "type", "param", "code"}}`) and the status codes
that go with it. Every failure a client can cause becomes an `APIError`; handlers in `app` turn
it (and Starlette's own 404/405) into a JSON response, never a traceback."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         405: "invalid_request_error", 413: "invalid_request_error", 503: "server_error", 500: "server_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def busy(message: str, retry_after_s: int) -> APIError:
    """503 with Retry-After: the queue is full, the model is loading, or the server is stopping."""
    return APIError(503, message, code="server_busy", headers={"Retry-After": str(retry_after_s)})


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTPException (unknown route, wrong method) in OpenAI's shape."""
    status = getattr(exc, "status_code", 500)
    if status == 404:
        message, code = f"unknown route {request.method} {request.url.path}", "unknown_url"
    elif status == 405:
        message, code = f"{request.method} is not allowed on {request.url.path}", "method_not_allowed"
    else:
        message, code = str(getattr(exc, "detail", "")) or "request failed", None
    return APIError(status, message, code=code, headers=dict(getattr(exc, "headers", None) or {})).response()


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not bad input: the body says so without Python internals; the console keeps the trace.
    return APIError(500, "internal server error (a bug in qwenchat; see the server's log)").response()
