"""tui/details.py: the facts line under a message."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from qwenchat.tui.details import details, sent_at


def test_sent_at_today_and_other_days():
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    today = now - timedelta(minutes=5)
    assert sent_at(today.isoformat(), now) == today.astimezone().strftime("%H:%M")
    old = now - timedelta(days=3)
    assert sent_at(old.isoformat(), now) == old.astimezone().strftime("%Y-%m-%d %H:%M")
    assert sent_at(None) == sent_at("not a time") == ""


def test_reply_details_leave_out_what_is_missing():
    now = datetime.now(timezone.utc)
    when = now.astimezone().strftime("%H:%M")
    reply = SimpleNamespace(role="assistant", created_at=now.isoformat(), meta={
        "model": "m", "usage": {"completion_tokens": 1}, "timings": {"decode_tok_s": 0.0}})
    assert details(reply) == f"{when} · m · 1 token"  # no "0.0 tok/s" for a one-token reply
    assert details(SimpleNamespace(role="assistant", created_at=None, meta={})) == ""
    user = SimpleNamespace(role="user", created_at=now.isoformat(), meta={"model": "m"})
    assert details(user) == when


def test_reply_details_name_the_model_briefly():
    """A folder model was shown by its whole path, a server model by its URL."""
    folder = SimpleNamespace(role="assistant", created_at=None, meta={"model": "/home/me/models/Qwen2.5-Coder/"})
    assert details(folder) == "Qwen2.5-Coder"
    remote = SimpleNamespace(role="assistant", created_at=None, meta={"model": "http://gpu:8000/v1#Qwen/Qwen2-72B"})
    assert details(remote) == "Qwen2-72B @ gpu:8000"
