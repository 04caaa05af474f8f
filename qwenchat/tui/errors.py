"""How an exception is put into words for the user: its message and, when it has one, its hint."""

from __future__ import annotations


def error_text(err: BaseException) -> tuple[str, str | None]:
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    return message, getattr(err, "hint", None)
