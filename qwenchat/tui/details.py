"""The dim line of facts under a message: when it was sent and, for a reply, which model wrote
it, how many tokens and how fast. Read from a session `Entry` (`created_at`, `meta`, as the
store keeps them); any fact that is missing is left out, never shown as 0. No widgets."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from qwenchat.model_label import short_model


def sent_at(created_at: str | None, now: datetime | None = None) -> str:
    """Local time of an ISO timestamp: "14:03" today, "2026-11-26 14:03" on another day."""
    if not created_at:
        return ""
    try:
        when = datetime.fromisoformat(created_at)
    except ValueError:
        return ""
    if when.tzinfo is None:  # the store writes UTC
        when = when.replace(tzinfo=timezone.utc)
    local = when.astimezone()
    today = (now or datetime.now(timezone.utc)).astimezone().date()
    return local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")


def details(entry: Any, now: datetime | None = None) -> str:
    """e.g. "14:03 · Qwen2.5-0.5B-Instruct · 212 tokens · 38.5 tok/s" for a reply."""
    parts = [sent_at(getattr(entry, "created_at", None), now)]
    meta = getattr(entry, "meta", None) or {}
    if getattr(entry, "role", "") == "assistant":
        parts.append(short_model(str(meta.get("model") or "")))
        tokens = _number((meta.get("usage") or {}).get("completion_tokens"))
        speed = _number((meta.get("timings") or {}).get("decode_tok_s"))
        if tokens:
            parts.append(f"{int(tokens)} token{'s' if tokens != 1 else ''}")
        if speed and tokens and tokens > 1:  # one token has no decode speed worth showing
            parts.append(f"{speed:.1f} tok/s")
    return " · ".join(p for p in parts if p)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None
