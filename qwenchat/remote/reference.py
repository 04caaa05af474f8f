"""How a remote model is named: a model name that is a server's URL, optionally `#MODEL_ID`.

`http://gpu-box:8000` means the OpenAI API under `/v1`; a URL with a path is taken as the API's
base as it is. Credentials never live in the URL (they would end up in the history as the
model's label): the key comes from a flag, the config file or the environment (`api_key`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from qwenchat.errors import UsageError

SCHEMES = ("http://", "https://")
KEY_VARIABLES = ("QWENCHAT_API_KEY", "OPENAI_API_KEY")  # in order of precedence
DEFAULT_PATH = "/v1"


def is_remote(name: str | None) -> bool:
    """True when `name` names a server (starts with http:// or https://, any case)."""
    return bool(name) and name.strip().lower().startswith(SCHEMES)  # type: ignore[union-attr]


@dataclass(frozen=True)
class RemoteRef:
    """A server's API base URL (no credentials, no trailing slash) and the model asked for."""

    base_url: str
    model: str | None = None

    @classmethod
    def parse(cls, text: str) -> "RemoteRef":
        url, _, model = text.strip().partition("#")
        parts = _split(url)
        if parts.username is not None or parts.password is not None:
            raise UsageError("the server URL holds a user name or password",
                             "leave credentials out of the URL; give the key with --api-key or QWENCHAT_API_KEY")
        if parts.query:
            raise UsageError(f"the server URL {_safe(url)!r} has a query (?{parts.query})",
                             "give the API's base URL, e.g. http://gpu-box:8000/v1")
        path = parts.path.rstrip("/") or DEFAULT_PATH
        base = f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"
        return cls(base, model.strip() or None)

    @property
    def label(self) -> str:
        """What the history records as the model: `base_url#model`, or `base_url`."""
        return f"{self.base_url}#{self.model}" if self.model else self.base_url

    @property
    def host(self) -> str:
        """`host:port` as the status bar shows it."""
        return urlsplit(self.base_url).netloc

    @property
    def root(self) -> str:
        """The server's root URL (no API path): where vLLM and llama.cpp put /tokenize, /props."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


def api_key(explicit: str | None = None) -> str | None:
    """The key to send: `explicit` (the --api-key flag, else the config's api_key), then
    QWENCHAT_API_KEY, then OPENAI_API_KEY; None when none is set (or all are blank)."""
    for value in (explicit, *(os.environ.get(v) for v in KEY_VARIABLES)):
        if value and value.strip():
            return value.strip()
    return None


def _split(url: str):
    hint = "name a server like http://gpu-box:8000/v1 (optionally #MODEL_ID)"
    if not is_remote(url) or any(c.isspace() for c in url):
        raise UsageError(f"{_safe(url)!r} is not a server URL", hint)
    try:
        parts = urlsplit(url)
    except ValueError as e:  # a broken [IPv6] host
        raise UsageError(f"the server URL {_safe(url)!r} is malformed ({e})", hint) from None
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise UsageError(f"the server URL {_safe(url)!r} has an invalid port", hint) from None
    if not parts.hostname:
        raise UsageError(f"the server URL {_safe(url)!r} names no host", hint)
    return parts


def _safe(url: str) -> str:
    """`url` with any user:password@ removed, for messages."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    return scheme + sep + netloc.rpartition("@")[2] + slash + path
