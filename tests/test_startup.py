"""One rule for continuing a conversation: its own model unless -m is given, for the app's
-c/--cid and ask's -c/--cid alike."""

from __future__ import annotations

from typing import Any

import pytest

from qwenchat.errors import StoreError, UsageError
from qwenchat.startup import choose_start, flag_overrides
from qwenchat.store import Store


@pytest.fixture
def store(isolated_home):
    with Store.open() as s:
        yield s


def test_continue_uses_the_conversations_own_model(store):
    old = store.create_conversation("qwen2-0.5b-instruct")
    store.create_conversation("qwen2.5-0.5b-instruct")
    latest = store.create_conversation("my-imported-model")
    assert choose_start(store, None, True, None).model == "my-imported-model"
    assert choose_start(store, None, True, None).conversation_id == latest.id
    assert choose_start(store, None, False, old.id).model == "qwen2-0.5b-instruct"
    assert choose_start(store, "other", True, None).model == "other"  # -m wins
    fresh = choose_start(store, None, False, None)
    assert (fresh.model, fresh.conversation) == (None, None)


def test_continue_mistakes_are_clear(store):
    with pytest.raises(UsageError, match="both"):
        choose_start(store, None, True, 3)
    with pytest.raises(UsageError, match="no conversation to continue"):
        choose_start(store, None, True, None, need_one=True)
    assert choose_start(store, None, True, None).conversation is None  # the app opens a new chat
    with pytest.raises(StoreError, match="42"):
        choose_start(store, None, False, 42)


def test_only_the_options_given_on_the_command_line_override_a_conversation():
    assert flag_overrides({"temperature": 0.2, "max_tokens": 9, "top_k": None, "model": "x"}) == {
        "temperature": 0.2, "max_new_tokens": 9}


@pytest.mark.parametrize("argv", [["-c"], ["chat", "-c"], ["--cid", "{cid}"]])
def test_the_app_opens_a_continued_conversation_with_its_model(store, monkeypatch, argv):
    from typer.testing import CliRunner

    import qwenchat.tui as tui
    from qwenchat.cli import app

    conv = store.create_conversation("model-of-that-chat")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(tui, "run_app", lambda factory, **kw: seen.update(kw))
    result = CliRunner().invoke(app, [a.format(cid=conv.id) for a in argv])
    assert result.exit_code == 0, result.output
    assert seen["model"] == "model-of-that-chat" and seen["conversation_id"] == conv.id
