"""Full-text search (FTS5) kept in sync with the messages by triggers."""

from __future__ import annotations

from qwenchat.store import Store


def test_search_finds_words_across_conversations(store: Store) -> None:
    a = store.create_conversation("m", title="birds")
    b = store.create_conversation("m", title="code")
    m1 = store.add_message(a.id, "user", "Tell me about the brown pelican")
    store.add_message(a.id, "assistant", "Pelicans dive for fish.")
    m3 = store.add_message(b.id, "user", "Reverse a list in Python")
    hits = store.search("pelican")
    assert {h.message_id for h in hits} >= {m1.id}
    assert all(h.conversation_id == a.id and h.conversation_title == "birds" for h in hits)
    assert "[pelican]" in next(h for h in hits if h.message_id == m1.id).snippet.lower()
    assert [h.message_id for h in store.search("python list")] == [m3.id]
    assert store.search("python pelican") == []  # every word must match


def test_search_prefix_case_and_accents(store: Store) -> None:
    conv = store.create_conversation("m")
    msg = store.add_message(conv.id, "user", "Un café crème, s'il vous plaît")
    assert [h.message_id for h in store.search("CAFE")] == [msg.id]
    assert [h.message_id for h in store.search("crè")] == [msg.id]  # prefix of the last word


def test_search_text_with_query_syntax_does_not_error(store: Store) -> None:
    conv = store.create_conversation("m")
    msg = store.add_message(conv.id, "user", 'how do I use C++ "templates" AND NOT macros?')
    for text in ['C++ "templates', "AND NOT", "macros)", "*", '"', "NEAR(", "-"]:
        store.search(text)  # no FTS5 syntax error
    assert [h.message_id for h in store.search('"templates')] == [msg.id]
    assert store.search("   ") == [] and store.search("!!!") == []


def test_words_joined_without_a_space_match_side_by_side(store: Store) -> None:
    """`2+2` found every message holding a 2 (a new-user run)."""
    conv = store.create_conversation("m")
    sum_ = store.add_message(conv.id, "user", "what is 2+2?")
    store.add_message(conv.id, "user", "give me 2 apples and 7 pears, 2 each")
    path = store.add_message(conv.id, "user", "use os.path.join here")
    store.add_message(conv.id, "user", "the os module has a path attribute")
    assert [h.message_id for h in store.search("2+2")] == [sum_.id]
    assert [h.message_id for h in store.search("os.path")] == [path.id]
    assert [h.message_id for h in store.search("os.pa")] == [path.id]  # still a prefix while typed
    assert len(store.search("os path")) == 2  # words apart: anywhere


def test_index_follows_finish_message_and_delete(store: Store) -> None:
    conv = store.create_conversation("m")
    store.add_message(conv.id, "user", "q")
    reply = store.add_message(conv.id, "assistant", "", status="pending")
    assert store.search("zebra") == []
    store.finish_message(reply.id, content="the zebra crossing", status="complete")
    assert [h.message_id for h in store.search("zebra")] == [reply.id]
    store.finish_message(reply.id, content="the giraffe", status="complete")
    assert store.search("zebra") == []
    store.delete_conversation(conv.id)
    assert store.search("giraffe") == []


def test_search_limit(store: Store) -> None:
    conv = store.create_conversation("m")
    for i in range(30):
        store.add_message(conv.id, "user", f"repeat word {i}")
    assert len(store.search("repeat")) == 20
    assert len(store.search("repeat", limit=5)) == 5
