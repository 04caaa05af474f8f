"""One line at the bottom: model, device and weight precision, context used, cache reuse and
speed. While a reply streams it shows the tokens so far and their rate. Everything shown is
plain text (a model name is a path the user typed, never markup)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static


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


def speed(tokens: int | None, tok_s: float | None) -> str | None:
    """`x.x tok/s`, or None when there is no rate worth showing (a one-token reply has none)."""
    if tok_s is None or tok_s <= 0 or (tokens is not None and tokens < 2):
        return None
    return f"{tok_s:.1f} tok/s"


def status_line(f: StatusFacts) -> str:
    short = f.model.rstrip("/").rsplit("/", 1)[-1] if f.model else ""
    parts = [short or "no model"]
    if f.note:  # early, so a narrow terminal still shows "generating… (Esc stops)"
        parts.append(f.note)
    if f.device:
        parts.append(f"{f.device}/{f.precision}" if f.precision else f.device)
    if f.output:
        parts.append(f.output)
    if f.window:
        parts.append(f"ctx {f.used or 0}/{f.window}")
    if f.cached is not None:
        parts.append(f"cached {f.cached}")
    if f.ttft is not None:
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
        self.update(Text(status_line(facts)))

    def show(self, **kwargs: object) -> None:
        self.show_facts(StatusFacts(**kwargs))  # type: ignore[arg-type]
