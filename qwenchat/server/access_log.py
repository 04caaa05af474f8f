"""One line on stderr per request, when its response is complete (a stream: when it ends):
client, method, path, status, and for generation requests the prompt, cached and completion
tokens and the decode speed. uvicorn's own access log is off; this one knows the tokens."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AccessLog:
    def __init__(self, app: ASGIApp, out: TextIO | None = None) -> None:
        self.app, self.out = app, out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status = [500]  # if the app fails before it answers
        t0 = time.perf_counter()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._write(line(scope, status[0], state.get("reply"), time.perf_counter() - t0, state.get("note")))

    def _write(self, text: str) -> None:
        out = self.out or sys.stderr
        try:
            out.write(text + "\n")
            out.flush()
        except (OSError, ValueError):  # the terminal went away: serving goes on
            pass


def line(scope: Scope, status: int, reply: Any, seconds: float, note: str | None = None) -> str:
    client = scope.get("client") or ("-", 0)
    text = f'{client[0]} "{scope["method"]} {scope["path"]}" {status}'
    if reply is not None:
        u, t = reply.usage, reply.timings
        text += (f" prompt {u.prompt_tokens} (cached {u.cached_tokens}) completion {u.completion_tokens}"
                 f" {t.decode_tok_s:.1f} tok/s")
        if reply.finish_reason == "cancelled":
            text += " cancelled"
    if note:
        text += f" ({note})"
    return text + f" {seconds:.2f}s"
