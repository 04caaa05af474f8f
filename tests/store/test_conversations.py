"""Conversations and the message tree: edit, regenerate, thread, head, titles, deletes."""

from __future__ import annotations

import json
import sqlite3

import pytest

from qwenchat.errors import StoreError
from qwenchat.store import Store, make_title


def _chat(store: Store):
    conv = store.create_conversation("Qwen/Qwen2.5-0.5B-Instruct", system_prompt="be brief")
    u1 = store.add_message(conv.id, "user", "What is a pelican?")
    a1 = store.add_message(conv.id, "assistant", "A large water bird.")
    u2 = store.add_message(conv.id, "user", "Can it fly?")
    a2 = store.add_message(conv.id, "assistant", "Yes.")
    return conv, [u1, a1, u2, a2]


def test_messages_chain_from_the_head_and_thread_is_root_first(store: Store) -> None:
    conv, (u1, a1, u2, a2) = _chat(store)
    assert (u1.parent_id, a1.parent_id, u2.parent_id, a2.parent_id) == (None, u1.id, a1.id, u2.id)
    assert [m.id for m in store.thread(conv.id)] == [u1.id, a1.id, u2.id, a2.id]
    got = store.get_conversation(conv.id)
    assert got.head_id == a2.id and got.message_count == 4
    assert got.system_prompt == "be brief"


def test_edit_adds_a_sibling_and_keeps_the_old_branch(store: Store) -> None:
    conv, (u1, a1, u2, a2) = _chat(store)
    edited = store.edit_message(u2.id, "Can it swim?")
    assert edited.parent_id == a1.id and edited.role == "user" and edited.id != u2.id
    reply = store.add_message(conv.id, "assistant", "Very well.")
    assert [m.content for m in store.thread(conv.id)] == [
        "What is a pelican?", "A large water bird.", "Can it swim?", "Very well."]
    assert [m.id for m in store.siblings(u2.id)] == [u2.id, edited.id]
    # the old branch is still there and can be made active again
    assert store.latest_leaf(u2.id).id == a2.id
    store.set_head(conv.id, store.latest_leaf(u2.id).id)
    assert [m.id for m in store.thread(conv.id)] == [u1.id, a1.id, u2.id, a2.id]
    assert store.get_conversation(conv.id).message_count == 6
    assert store.get_message(reply.id).content == "Very well."


def test_editing_the_first_message_makes_a_second_root(store: Store) -> None:
    conv, (u1, *_rest) = _chat(store)
    new_root = store.edit_message(u1.id, "What is a heron?")
    assert new_root.parent_id is None
    assert [m.id for m in store.thread(conv.id)] == [new_root.id]
    assert [m.id for m in store.siblings(u1.id)] == [u1.id, new_root.id]


def test_regenerate_streams_a_new_reply_under_the_same_user_message(store: Store) -> None:
    conv, (u1, a1, u2, a2) = _chat(store)
    pending = store.add_message(conv.id, "assistant", "", parent_id=u2.id, status="pending",
                                meta={"seed": 7, "device": "cpu"})
    assert pending.status == "pending" and pending.finished_at is None
    assert store.thread(conv.id)[-1].id == pending.id
    done = store.finish_message(pending.id, content="Yes, well.", status="interrupted",
                                meta={"tokens_per_s": 12.5}, prompt_tokens=30,
                                completion_tokens=4)
    assert done.content == "Yes, well." and done.status == "interrupted"
    assert done.meta == {"seed": 7, "device": "cpu", "tokens_per_s": 12.5}
    assert (done.prompt_tokens, done.completion_tokens) == (30, 4)
    assert done.finished_at is not None
    assert [m.id for m in store.siblings(a2.id)] == [a2.id, pending.id]
    assert [m.content for m in store.thread(conv.id)][-1] == "Yes, well."


def test_user_message_is_committed_before_the_reply(store: Store, tmp_path) -> None:
    conv = store.create_conversation("m")
    user = store.add_message(conv.id, "user", "hello")
    # another connection (another process, a crash) already sees it
    with Store.open(store.path) as other:
        assert [m.id for m in other.thread(conv.id)] == [user.id]


def test_title_comes_from_the_first_user_message_and_can_be_renamed(store: Store) -> None:
    conv = store.create_conversation("m")
    assert conv.title is None
    text = "Please explain,\nin simple words, how   transformers attend to earlier tokens today"
    store.add_message(conv.id, "user", text)
    store.add_message(conv.id, "user", "second question")
    title = store.get_conversation(conv.id).title
    assert title == make_title(text)
    assert "\n" not in title and len(title) <= 51 and title.endswith("…")
    assert title.startswith("Please explain, in simple words, how transformers")
    renamed = store.rename_conversation(conv.id, "  Attention  ")
    assert renamed.title == "Attention"
    with pytest.raises(StoreError):
        store.rename_conversation(conv.id, "   ")


def test_make_title() -> None:
    assert make_title("short one") == "short one"
    assert make_title("   \n ") is None
    long_word = "x" * 80
    assert make_title(long_word) == "x" * 50 + "…"
    t = make_title("word " * 30)
    assert len(t) <= 51 and not t.rstrip("…").endswith(" ")


def test_list_is_newest_first_and_latest_and_limit(store: Store) -> None:
    a = store.create_conversation("m", title="a")
    b = store.create_conversation("m", title="b")
    c = store.create_conversation("m", title="c")
    store.add_message(a.id, "user", "bump a")
    assert [x.title for x in store.list_conversations()] == ["a", "c", "b"]
    assert [x.title for x in store.list_conversations(limit=2)] == ["a", "c"]
    assert store.latest_conversation().id == a.id
    assert [x.title for x in store.list_conversations(query="bump")] == ["a"]
    assert [x.title for x in store.list_conversations(query="c")] == ["c"]
    assert c.id > b.id > a.id


def test_latest_conversation_is_none_when_empty(store: Store) -> None:
    assert store.latest_conversation() is None
    assert store.list_conversations() == []


def test_update_conversation_changes_only_given_fields(store: Store) -> None:
    conv = store.create_conversation("m1", system_prompt="s", settings={"temperature": 0.5})
    got = store.update_conversation(conv.id, settings={"temperature": 0.9, "top_k": 5})
    assert got.settings == {"temperature": 0.9, "top_k": 5}
    assert got.system_prompt == "s" and got.model == "m1"
    got = store.update_conversation(conv.id, system_prompt=None, model="m2")
    assert got.system_prompt is None and got.model == "m2"


def test_settings_keep_the_order_of_the_objects_inside_them(store: Store) -> None:
    """Settings were stored with sort_keys=True: a schema's properties came back alphabetical, and
    the reply's fields changed order on the next turn (`ask -c`, the app's restored chat)."""
    schema = {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}},
              "required": ["zeta", "alpha"]}
    conv = store.create_conversation("m", settings={"constraint": schema, "temperature": 0.5})
    assert list(store.get_conversation(conv.id).settings["constraint"]["properties"]) == ["zeta", "alpha"]
    store.update_conversation(conv.id, settings={"top_k": 5, "constraint": schema})
    got = store.get_conversation(conv.id).settings
    assert list(got["constraint"]["properties"]) == ["zeta", "alpha"]
    assert got == {"constraint": schema, "top_k": 5}  # compared as values: order does not matter here
    imported = store.import_conversation(json.loads(json.dumps(store.export_conversation(conv.id))))
    assert list(imported.settings["constraint"]["properties"]) == ["zeta", "alpha"]


def test_settings_stored_sorted_by_an_older_version_still_load(store: Store) -> None:
    conv = store.create_conversation("m")
    old = json.dumps({"constraint": {"properties": {"zeta": {}, "alpha": {}}}, "top_k": 5}, sort_keys=True)
    with sqlite3.connect(store.path) as conn:  # as an older version wrote it
        conn.execute("UPDATE conversations SET settings = ? WHERE id = ?", (old, conv.id))
    conn.close()
    assert store.get_conversation(conv.id).settings == {"constraint": {"properties": {"alpha": {}, "zeta": {}}}, "top_k": 5}


def test_missing_conversation_error_names_it_and_the_fix(store: Store) -> None:
    with pytest.raises(StoreError) as err:
        store.get_conversation(99)
    assert err.value.message == "no conversation 99"
    assert "qwenchat history list" in err.value.hint
    for call in (lambda: store.thread(99), lambda: store.add_message(99, "user", "x"),
                 lambda: store.delete_conversation(99), lambda: store.rename_conversation(99, "t")):
        with pytest.raises(StoreError):
            call()


def test_parent_from_another_conversation_is_refused(store: Store) -> None:
    a = store.create_conversation("m")
    b = store.create_conversation("m")
    msg = store.add_message(a.id, "user", "in a")
    with pytest.raises(StoreError):
        store.add_message(b.id, "assistant", "x", parent_id=msg.id)
    with pytest.raises(StoreError):
        store.set_head(b.id, msg.id)
    assert store.get_conversation(b.id).message_count == 0


def test_invalid_role_or_status_is_a_programming_error(store: Store) -> None:
    conv = store.create_conversation("m")
    with pytest.raises(ValueError):
        store.add_message(conv.id, "robot", "x")
    with pytest.raises(ValueError):
        store.add_message(conv.id, "user", "x", status="done")
    m = store.add_message(conv.id, "assistant", "", status="pending")
    with pytest.raises(ValueError):
        store.finish_message(m.id, content="x", status="pending")


def test_delete_removes_messages_and_ids_are_not_reused(store: Store) -> None:
    conv, msgs = _chat(store)
    keep = store.create_conversation("m", title="keep")
    store.add_message(keep.id, "user", "kept words")
    store.delete_conversation(conv.id)
    with pytest.raises(StoreError):
        store.get_conversation(conv.id)
    assert store._conn.execute(
        "SELECT count(*) FROM messages WHERE conversation_id = ?", (conv.id,)).fetchone()[0] == 0
    assert [c.id for c in store.list_conversations()] == [keep.id]
    assert store.create_conversation("m").id > keep.id
    assert store._conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_head_can_be_cleared(store: Store) -> None:
    conv, _ = _chat(store)
    store.set_head(conv.id, None)
    assert store.thread(conv.id) == []
    first = store.add_message(conv.id, "user", "fresh start")
    assert first.parent_id is None


def test_a_message_after_a_head_that_moved_is_refused_and_nothing_is_written(store: Store) -> None:
    from qwenchat.errors import ConversationChanged

    conv, msgs = _chat(store)
    read = msgs[-1].id  # what this window read
    other = store.add_message(conv.id, "user", "from another window")
    with pytest.raises(ConversationChanged) as caught:
        store.add_message(conv.id, "user", "mine", parent_id=read, expect_head=read)
    assert "another window" in caught.value.message and caught.value.hint
    assert store.get_conversation(conv.id).head_id == other.id
    assert [m.content for m in store.thread(conv.id)][-1] == "from another window"
    assert store.get_conversation(conv.id).message_count == 5  # "mine" is nowhere
    mine = store.add_message(conv.id, "user", "mine", expect_head=other.id)  # read again: it goes
    assert mine.parent_id == other.id


def test_renaming_a_conversation_does_not_make_it_the_latest(store: Store) -> None:
    """Found hands-on: `history rename 19 ...` then `ask -c` continued conversation 19."""
    old = store.create_conversation("m")
    store.add_message(old.id, "user", "old question")
    new = store.create_conversation("m")
    store.add_message(new.id, "user", "new question")
    before = store.get_conversation(old.id).updated_at
    store.rename_conversation(old.id, "a better title")
    assert store.latest_conversation().id == new.id
    assert store.get_conversation(old.id).updated_at == before
    assert [c.id for c in store.list_conversations()] == [new.id, old.id]


def test_others_version_changes_with_another_connections_writes_only(store: Store) -> None:
    start = store.others_version()
    store.create_conversation("m")  # this handle's own write
    assert store.others_version() == start
    with Store.open(store.path) as other:  # `qwenchat ask` in another terminal
        other.create_conversation("m")
    seen = store.others_version()
    assert seen != start and store.others_version() == seen
