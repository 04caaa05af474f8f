"""qwenchat.chat_export: the app's export of one conversation to a file."""

from __future__ import annotations

import json

import pytest

from qwenchat.chat_export import ExportError, ExportExists, default_path, format_for, slug, write_export
from qwenchat.store import Store


@pytest.fixture
def store():
    s = Store.open()
    yield s
    s.close()


def _chat(store):
    conv = store.create_conversation("fake-model", "Be brief.")
    u = store.add_message(conv.id, "user", "line one\n  indented")
    store.add_message(conv.id, "assistant", "first reply", parent_id=u.id)
    store.add_message(conv.id, "assistant", "second reply", parent_id=u.id)
    store.rename_conversation(conv.id, "Héllo, wörld: a *test*!")
    return conv.id


def test_slug():
    assert slug("Héllo, wörld: a *test*!") == "hello-world-a-test"
    assert slug(None) == slug("???") == "chat"
    long = slug("word " * 30)
    assert len(long) <= 40 and not long.endswith("-") and long.startswith("word-word")


def test_default_path_is_in_home_and_never_an_existing_file(tmp_path):
    p = default_path(7, "My chat", "md", folder=tmp_path)
    assert p == tmp_path / "qwenchat-7-my-chat.md"
    p.write_text("x")
    assert default_path(7, "My chat", "md", folder=tmp_path) == tmp_path / "qwenchat-7-my-chat-2.md"
    assert default_path(7, "My chat", "json", folder=tmp_path).suffix == ".json"


def test_format_follows_the_suffix_typed():
    from pathlib import Path

    assert format_for(Path("a.json"), "md") == "json"
    assert format_for(Path("a.MD"), "json") == "md"
    assert format_for(Path("a.txt"), "json") == "json"


def test_markdown_and_json_come_from_the_store_exporters(store, tmp_path):
    cid = _chat(store)
    md = write_export(store, cid, tmp_path / "c.md", "md")
    text = md.read_text(encoding="utf-8")
    assert "line one\n  indented" in text and "second reply" in text and "first reply" not in text
    assert "Be brief." in text
    js = write_export(store, cid, tmp_path / "c.json", "md")  # the suffix wins
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["format"] == "qwenchat.conversation" and len(data["messages"]) == 3  # every branch


def test_write_errors_are_clear(store, tmp_path):
    cid = _chat(store)
    with pytest.raises(ExportError, match="cannot write") as e:
        write_export(store, cid, tmp_path / "no" / "such" / "dir" / "c.md", "md")
    assert e.value.hint
    with pytest.raises(ExportError, match="is a folder") as e:
        write_export(store, cid, tmp_path, "json")
    assert e.value.hint.endswith("chat.json")  # the format asked for (it said chat.md)
    (tmp_path / "there.md").write_text("keep me")
    with pytest.raises(ExportExists):
        write_export(store, cid, tmp_path / "there.md", "md")
    assert (tmp_path / "there.md").read_text() == "keep me"
    write_export(store, cid, tmp_path / "there.md", "md", overwrite=True)
    assert "second reply" in (tmp_path / "there.md").read_text()
