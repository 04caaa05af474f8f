"""Export and import: the JSON round trip is exact (but for ids); Markdown; bad input."""

from __future__ import annotations

import json

import pytest

from qwenchat.errors import StoreError
from qwenchat.store import Store, to_markdown


def _tree(store: Store):
    conv = store.create_conversation(
        "Qwen/Qwen2.5-0.5B-Instruct", system_prompt="be brief",
        settings={"temperature": 0.7, "top_p": 0.9})
    u1 = store.add_message(conv.id, "user", "What is a pelican? ✓ ünïcode")
    a1 = store.add_message(conv.id, "assistant", "A bird.", prompt_tokens=12, completion_tokens=3,
                           meta={"device": "cpu", "dtype": "float32", "seed": 1,
                                 "timings": {"prefill_s": 0.01, "decode_s": 0.2}})
    store.add_message(conv.id, "assistant", "A big bird", parent_id=u1.id, status="interrupted")
    u2 = store.edit_message(u1.id, "What is a heron?")
    a2 = store.add_message(conv.id, "assistant", "", status="pending")
    store.finish_message(a2.id, content="oops", status="error", meta={"error": "OOM"})
    store.set_head(conv.id, a1.id)
    return store.get_conversation(conv.id), (u1, a1, u2, a2)


def _without_ids(data: dict) -> dict:
    """The export with ids replaced by their position, so two exports compare structurally."""
    data = json.loads(json.dumps(data))
    index = {m["id"]: i for i, m in enumerate(data["messages"])}
    for m in data["messages"]:
        m["id"] = index[m["id"]]
        m["parent_id"] = index.get(m["parent_id"])
    data["head_id"] = index.get(data["head_id"])
    data.pop("id")
    return data


def test_json_round_trip_is_exact_but_for_ids(store: Store) -> None:
    conv, _ = _tree(store)
    store.create_conversation("other", title="filler")  # so the new ids differ
    exported = store.export_conversation(conv.id)
    text = json.dumps(exported)  # what `history export` writes
    imported = store.import_conversation(json.loads(text))
    assert imported.id != conv.id
    again = store.export_conversation(imported.id)
    assert {m["id"] for m in again["messages"]}.isdisjoint({m["id"] for m in exported["messages"]})
    assert _without_ids(again) == _without_ids(exported)
    # spot checks of what "everything" means
    assert again["created_at"] == conv.created_at and again["updated_at"] == conv.updated_at
    assert [m["status"] for m in again["messages"]] == [
        "complete", "complete", "interrupted", "complete", "error"]
    assert again["messages"][1]["meta"]["timings"] == {"prefill_s": 0.01, "decode_s": 0.2}
    assert [m.content for m in store.thread(imported.id)] == [m.content for m in store.thread(conv.id)]
    assert store.get_conversation(imported.id).message_count == 5
    # the imported messages are searchable
    assert {h.conversation_id for h in store.search("heron")} == {conv.id, imported.id}


def test_export_all_and_import_all_into_a_fresh_database(store: Store, tmp_path) -> None:
    conv, _ = _tree(store)
    second = store.create_conversation("m", title="second")
    store.add_message(second.id, "user", "hi")
    dump = json.loads(json.dumps(store.export_all()))
    assert dump["format"] == "qwenchat.export" and len(dump["conversations"]) == 2
    with Store.open(tmp_path / "fresh.db") as fresh:
        convs = fresh.import_data(dump).conversations
        assert [c.title for c in convs] == [conv.title, "second"]
        again = fresh.export_all()
    assert [_without_ids(c) for c in again["conversations"]] == [
        _without_ids(c) for c in dump["conversations"]]


def test_import_of_messages_in_any_order(store: Store) -> None:
    conv, _ = _tree(store)
    data = store.export_conversation(conv.id)
    data["messages"].reverse()
    imported = store.import_conversation(data)
    assert [m.content for m in store.thread(imported.id)] == [
        m.content for m in store.thread(conv.id)]


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d.update(format="something"), "unknown format"),
        (lambda d: d.pop("format"), "$.format is missing"),  # was "unknown format null"
        (lambda d: d.update(version=99), "unsupported version"),
        (lambda d: d["messages"][0].update(role="robot"), "role"),
        (lambda d: d["messages"][0].update(status="done"), "status"),
        (lambda d: d["messages"][1].update(parent_id=12345), "unknown parent"),
        (lambda d: d.update(head_id=777), "head"),
        (lambda d: d["messages"][1].update(id=d["messages"][0]["id"]), "twice"),
        (lambda d: d["messages"][0].update(parent_id=d["messages"][1]["id"]), "own ancestor"),
        (lambda d: d.pop("created_at"), "created_at"),
    ],
)
def test_bad_imports_are_refused_and_change_nothing(store: Store, mutate, words) -> None:
    conv, _ = _tree(store)
    data = store.export_conversation(conv.id)
    mutate(data)
    with pytest.raises(StoreError) as err:
        store.import_data(data)
    assert words in err.value.message and "not a qwenchat export" in err.value.message
    assert err.value.hint
    assert [c.id for c in store.list_conversations()] == [conv.id]


def test_markdown_shows_the_active_thread(store: Store) -> None:
    conv, (u1, a1, u2, a2) = _tree(store)
    store.set_head(conv.id, a2.id)
    md = to_markdown(store.get_conversation(conv.id), store.thread(conv.id))
    assert md.startswith(f"# {conv.title}\n")
    assert "## System\n\n```text\nbe brief\n```" in md
    assert "## User\n\n```text\nWhat is a heron?\n```" in md and "## Assistant\n\noops\n\n*(error)*" in md
    assert "pelican" not in md.split("## System")[1]  # the other branch is not shown


def test_markdown_keeps_what_the_user_typed_exactly(store: Store) -> None:
    """A Markdown reader must show the user's own line breaks, indentation, headings-looking lines
    and backticks as typed (they were collapsed into one paragraph before)."""
    from markdown_it import MarkdownIt

    typed = "first line\nsecond line\n    indented code\n## not a heading\nuse ``` fences and `x`"
    conv = store.create_conversation("m", "line one\nline two")
    store.add_message(conv.id, "user", typed)
    store.add_message(conv.id, "assistant", "**bold** reply")
    md = to_markdown(store.get_conversation(conv.id), store.thread(conv.id))
    tokens = MarkdownIt().parse(md)
    fences = [t.content for t in tokens if t.type == "fence"]
    assert fences == ["line one\nline two\n", typed + "\n"]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "not a heading" not in headings
    assert any(t.type == "inline" and "**bold** reply" in t.content for t in tokens)  # replies stay Markdown


def test_markdown_fences_a_json_reply(store: Store) -> None:
    """A reply written under a JSON constraint was written bare: a Markdown reader ran it into one
    paragraph (a new-user run). A Markdown reply stays Markdown."""
    from markdown_it import MarkdownIt

    conv = store.create_conversation("m")
    user = store.add_message(conv.id, "user", "invent a person")
    json_reply = '{\n  "name": "Ada",\n  "age": 36\n}'
    store.add_message(conv.id, "assistant", json_reply, parent_id=user.id,
                      meta={"settings": {"constraint": {"type": "object"}}})
    again = store.add_message(conv.id, "user", "and in words?")
    store.add_message(conv.id, "assistant", "Ada is **36**.", parent_id=again.id, meta={"settings": {}})
    tokens = MarkdownIt().parse(to_markdown(store.get_conversation(conv.id), store.thread(conv.id)))
    fences = [(t.info, t.content) for t in tokens if t.type == "fence"]
    assert ("json", json_reply + "\n") in fences
    assert any(t.type == "inline" and "Ada is **36**." in t.content for t in tokens)


# --------------------------------------------------------------------------- issue 12 item 15


def _set(path: list, value):
    """A mutation setting data[path...] = value."""
    def mutate(d):
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
    return mutate


@pytest.mark.parametrize(
    "mutate, where, words",
    [
        (_set(["model"], 42), "$.model", "a number (42), expected a string"),
        (_set(["title"], ["a"]), "$.title", "a list, expected a string or null"),
        (_set(["messages", 1, "prompt_tokens"], "12"), "$.messages[1].prompt_tokens", 'a string ("12")'),
        (_set(["messages", 1, "completion_tokens"], -3), "$.messages[1].completion_tokens", "expected 0 to"),
        (_set(["messages", 1, "completion_tokens"], True), "$.messages[1].completion_tokens", "a boolean"),
        (_set(["messages", 0, "created_at"], 1700000000), "$.messages[0].created_at", "a number"),
        (_set(["messages", 0, "created_at"], "yesterday"), "$.messages[0].created_at", "not an ISO 8601"),
        (_set(["messages", 0, "created_at"], "2024-01-01T10:00:00"), "$.messages[0].created_at", "time zone"),
        (_set(["updated_at"], "2999-01-01T00:00:00+00:00"), "$.updated_at", "in the future"),
        (_set(["messages", 2, "finished_at"], "2999-01-01T00:00:00+00:00"), "$.messages[2].finished_at",
         "in the future"),
        (_set(["messages", 0, "content"], 7), "$.messages[0].content", "expected a string"),
        (_set(["messages", 0, "id"], 1.5), "$.messages[0].id", "expected an integer"),
        (_set(["settings"], "hot"), "$.settings", "expected an object"),
        (_set(["messages", 1, "meta"], {"a": json.loads("[" * 100 + "]" * 100)}), "$.messages[1].meta",
         "levels deep"),
        (_set(["system_prompt"], "x" * (16 * 1024 * 1024 + 1)), "$.system_prompt", "characters long"),
    ],
)
def test_an_import_with_a_bad_field_names_it_and_writes_nothing(store: Store, mutate, where, words) -> None:
    conv, _ = _tree(store)
    data = store.export_conversation(conv.id)
    before = store.export_all()
    mutate(data)
    with pytest.raises(StoreError) as err:
        store.import_data(data)
    assert where in err.value.message and words in err.value.message, err.value.message
    assert "not a qwenchat export" in err.value.message and err.value.hint
    assert store.export_all() == before


def test_the_path_names_the_conversation_within_an_all_export(store: Store) -> None:
    _tree(store)
    second = store.create_conversation("m", title="second")
    store.add_message(second.id, "user", "hi")
    data = store.export_all()
    data["conversations"][1]["messages"][0]["prompt_tokens"] = "many"
    with pytest.raises(StoreError, match=r"\$\.conversations\[1\]\.messages\[0\]\.prompt_tokens"):
        store.import_data(data)
    assert len(store.list_conversations()) == 2  # the good first conversation was not written either


def test_timestamps_in_other_forms_are_stored_in_the_sortable_form(store: Store) -> None:
    conv, _ = _tree(store)
    data = store.export_conversation(conv.id)
    data["created_at"] = "2024-05-01T12:00:00Z"
    data["updated_at"] = "2024-05-01T14:00:00+02:00"
    imported = store.import_conversation(data)
    assert imported.created_at == "2024-05-01T12:00:00.000000+00:00"
    assert imported.updated_at == "2024-05-01T12:00:00.000000+00:00"


def test_parse_refuses_non_utf8_deep_nesting_and_oversized_files() -> None:
    from qwenchat.store.import_check import Limits, parse

    with pytest.raises(StoreError, match=r"f\.json is not UTF-8 text \(byte 14"):
        parse(b'{"title": "caf\xe9"}', "f.json")
    with pytest.raises(StoreError, match="nests arrays or objects too deeply"):
        parse(b"[" * 100_000 + b"]" * 100_000, "f.json")
    with pytest.raises(StoreError, match="more than an import may hold"):
        parse(b"[1, 2, 3]", "f.json", Limits(file_bytes=4))
    assert parse('\ufeff{"a": 1}'.encode(), "f.json") == {"a": 1}  # a BOM is not an error


def test_a_chat_already_held_is_not_imported_twice_unless_asked(store: Store) -> None:
    conv, _ = _tree(store)
    data = store.export_conversation(conv.id)
    first = store.import_data(data)
    assert first.conversations == [] and first.present == [conv.id]
    edited = json.loads(json.dumps(data))
    edited["messages"][0]["content"] = "What is a stork?"  # same start, another text: another chat
    second = store.import_data(edited)
    assert second.present == [] and [m.content for m in store.thread(second.conversations[0].id)][0] == "What is a stork?"
    copy = store.import_data(data, again=True)
    assert copy.present == [] and len(copy.conversations) == 1
    assert len(store.list_conversations()) == 3
