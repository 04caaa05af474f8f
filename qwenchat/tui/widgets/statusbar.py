"""One line at the bottom: model, device and weight precision, context used, cache reuse and
speed. While a reply streams it shows the tokens so far and their rate. Everything shown is
plain text (a model name is a path the user typed, never markup).

A remote model (one on a server) shows only what is true of it: the server's host:port in place
of device and precision (which only the local engine knows), the context meter only when the
server reported its window, with "~" on counts that are estimates (a server without a tokenizer
endpoint), and cache reuse only when the server reported some."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import Static

from qwenchat.model_label import short_model
from qwenchat.remote.reference import is_remote


@dataclass
class StatusFacts:
    """What the bar can show; a None or empty field is left out."""

    model: str = ""
    device: str = ""
    precision: str = ""
    window: int | None = None
    used: int | None = None
    cached: int | None = None
    ttft: float | None = None
    tok_s: float | None = None
    tokens: int | None = None  # completion tokens of the last (or the streaming) reply
    note: str = ""
    output: str = ""  # structured output while on: "JSON" or "JSON schema"
    server: str = ""  # host:port of a remote model's server ("" for a local model)
    estimated: bool = False  # `used` is an estimate (shown with "~")


def model_facts(info: Any, **shown: Any) -> StatusFacts:
    """The facts a `session.model_info` gives, plus `shown` (note, output, ...)."""
    server = getattr(info, "server", None)
    if not server:
        return StatusFacts(model=info.label, device=info.device, precision=info.precision,
                           window=info.context_window, **shown)
    host, model = _remote_names(server, info.label)
    return StatusFacts(model=model, server=host, window=info.context_window or None,
                       estimated=not getattr(info, "exact_tokens", True), **shown)


def _remote_names(server: str, label: str) -> tuple[str, str]:
    """(host:port, model id) of a remote model, from its server URL and its label URL#ID."""
    from qwenchat.remote.reference import RemoteRef

    try:
        ref = RemoteRef.parse(label)
        return ref.host, ref.model or ""
    except Exception:  # a label that does not parse: the server is still worth naming
        return RemoteRef.parse(server).host, ""


def speed(tokens: int | None, tok_s: float | None) -> str | None:
    """`x.x tok/s`, or None when there is no rate worth showing (a one-token reply has none)."""
    if tok_s is None or tok_s <= 0 or (tokens is not None and tokens < 2):
        return None
    return f"{tok_s:.1f} tok/s"


def status_line(f: StatusFacts) -> str:
    if is_remote(f.model):  # a server's URL, while connecting: "model @ host:port" or "host:port"
        short = short_model(f.model)
    else:
        short = f.model.rstrip("/").rsplit("/", 1)[-1] if f.model else ""
    parts = [short or ("model?" if f.server else "no model")]
    if f.note:  # early, so a narrow terminal still shows "generating… (Esc stops)"
        parts.append(f.note)
    if f.server:
        parts.append(f.server)
    elif f.device:
        parts.append(f"{f.device}/{f.precision}" if f.precision else f.device)
    if f.output:
        parts.append(f.output)
    if f.window:
        parts.append(f"ctx {'~' if f.estimated else ''}{f.used or 0}/{f.window}")
    if f.cached is not None and (f.cached or not f.server):  # a server's 0 may mean "not reported"
        parts.append(f"cached {f.cached}")
    if f.ttft is not None and f.tokens != 0:  # a reply stopped before its first token had no first token
        parts.append(f"TTFT {f.ttft:.2f}s")
    if f.tokens is not None:
        parts.append(f"{f.tokens} tok")
    rate = speed(f.tokens, f.tok_s)
    if rate:
        parts.append(rate)
    return " │ ".join(parts)


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def show_facts(self, facts: StatusFacts) -> None:
        self.update(Text(status_line(facts)), layout=False)  # one line, always: no relayout of the screen

    def show(self, **kwargs: object) -> None:
        self.show_facts(StatusFacts(**kwargs))  # type: ignore[arg-type]
