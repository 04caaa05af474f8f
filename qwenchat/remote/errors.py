"""What goes wrong talking to a remote server, each with a message naming the problem and a
hint naming the fix. The key is never in either: `scrub` removes it from text a server sent.
Subclasses let a face tell the cases apart; all exit with status 1."""

from __future__ import annotations

from qwenchat.errors import QwenchatError


class RemoteError(QwenchatError):
    """A remote server cannot be reached, refuses the request or answers in a way we cannot use."""


class ConnectError(RemoteError):
    """No connection: refused, unknown host, TLS failure."""


class AuthError(RemoteError):
    """401 or 403: the key is missing, wrong or not allowed."""


class NotFoundError(RemoteError):
    """404: the model or the route is not there."""


class BusyError(RemoteError):
    """429 after the bounded retries."""


class ServerFailedError(RemoteError):
    """5xx: the server itself failed."""


class RemoteTimeoutError(RemoteError):
    """No token (or no answer) within the time allowed."""


class FormatError(RemoteError):
    """The answer is not in the OpenAI format (HTML, plain text, JSON of another shape)."""


class StreamCutError(RemoteError):
    """The stream ended mid-reply (the session saves the partial reply as interrupted)."""


class RefusedError(RemoteError):
    """Another 4xx: the server refused the request as sent."""


def scrub(text: str, key: str | None) -> str:
    """`text` on one line, cut to a readable length, with the key (if any) masked."""
    text = " ".join(str(text).split())
    if key:
        text = text.replace(key, "***")
    return text if len(text) <= 300 else text[:297] + "..."
