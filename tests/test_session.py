"""ChatSession: the turn lifecycle against a real store and a tiny real engine."""

from __future__ import annotations

import threading

import pytest

from qwenchat.engine.chat import ChatEngine, GenerateOptions
from qwenchat.engine.errors import ContextOverflowError
from qwenchat.engine.generate import Chunk
from qwenchat.session import ChatSession, Turn
from qwenchat.session_records import Entry
from qwenchat.store import Store


@pytest.fixture(scope="module")
def engine(tiny_model) -> ChatEngine:
    return ChatEngine.load(tiny_model, device="cpu")


@pytest.fixture
def store(isolated_home):
    with Store.open() as s:
        yield s


def finish(events) -> Turn:
    *_, turn = events
    assert isinstance(turn, Turn)
    return turn


OPTS = GenerateOptions(max_new_tokens=6, temperature=0)


def test_turns_are_stored_and_the_cache_is_reused_within_a_process(engine, store):
    engine.reset_cache()
    s = ChatSession(engine, store, system_prompt="Be brief.", options=OPTS)
    t1 = finish(s.send("Hello"))
    t2 = finish(s.send("And then?"))
    assert t1.conversation_id == t2.conversation_id
    assert t2.reply.usage.cached_tokens >= t1.reply.usage.prompt_tokens
    conv = store.get_conversation(t1.conversation_id)
    assert conv.system_prompt == "Be brief." and conv.title == "Hello"
    thread = store.thread(conv.id)
    assert [(m.role, m.status) for m in thread] == [("user", "complete"), ("assistant", "complete")] * 2
    assert thread[1].content == t1.reply.text and thread[1].meta["usage"]["completion_tokens"] == t1.reply.usage.completion_tokens
    assert (thread[1].prompt_tokens, thread[1].completion_tokens) == (t1.reply.usage.prompt_tokens, t1.reply.usage.completion_tokens)


def test_regenerate_and_edit_keep_old_branches(engine, store):
    s = ChatSession(engine, store, options=GenerateOptions(max_new_tokens=6, temperature=1.0, seed=1))
    first = finish(s.send("Hello"))
    s.options = GenerateOptions(max_new_tokens=6, temperature=1.0, seed=2)
    again = finish(s.regenerate())
    assert again.message_id != first.message_id and again.user_message_id == first.user_message_id
    assert [e.role for e in s.entries] == ["user", "assistant"]
    edited = finish(s.edit(0, "Hi instead"))
    assert [e.content for e in s.entries][0] == "Hi instead"
    thread = store.thread(edited.conversation_id)
    assert [m.content for m in thread][0] == "Hi instead" and len(thread) == 2
    assert len(store.siblings(first.message_id)) == 2  # both replies to "Hello" kept


def test_load_continues_a_stored_conversation(engine, store):
    s = ChatSession(engine, store, options=OPTS)
    t = finish(s.send("Hello"))
    other = ChatSession(engine, store)
    other.load(t.conversation_id)
    assert [e.content for e in other.entries] == ["Hello", t.reply.text]
    assert other.options.max_new_tokens == 6  # settings saved with the conversation
    finish(other.send("More"))
    assert len(store.thread(t.conversation_id)) == 4


def test_cancel_saves_the_partial_reply_as_interrupted(engine, store):
    s = ChatSession(engine, store, options=GenerateOptions(max_new_tokens=500, temperature=1.0, top_k=0, seed=5))
    seen = 0
    turn = None
    for ev in s.send("Tell me a story"):
        if isinstance(ev, Chunk):
            seen += 1
            if seen == 2:
                threading.Thread(target=s.cancel).start()
        else:
            turn = ev
    assert turn.reply.finish_reason == "cancelled"
    msg = store.get_message(turn.message_id)
    assert msg.status == "interrupted" and msg.content == turn.reply.text


def test_a_reply_stopped_before_its_first_word_is_kept_but_not_shown_to_the_model(engine, store):
    s = ChatSession(engine, store, options=OPTS)
    t = finish(s.send("Hello"))
    asked = store.add_message(t.conversation_id, "user", "Again", parent_id=t.message_id)
    store.add_message(t.conversation_id, "assistant", "", parent_id=asked.id, status="interrupted")
    other = ChatSession(engine, store)
    other.load(t.conversation_id)
    assert [(e.role, e.content) for e in other.entries][-2:] == [("user", "Again"), ("assistant", "")]
    assert other.messages[-1] == {"role": "assistant", "content": ""}  # last: F5 continues it
    other.entries.append(Entry(role="user", content="Third"))
    assert [m["content"] for m in other.messages] == ["Hello", t.reply.text, "Again", "Third"]


def test_closing_the_stream_mid_reply_saves_what_was_said(engine, store):
    s = ChatSession(engine, store, options=GenerateOptions(max_new_tokens=500, temperature=1.0, top_k=0, seed=5))
    events = s.send("Tell me a story")
    text = "".join(next(events).text for _ in range(3))
    events.close()
    last = store.thread(s.conversation_id)[-1]
    assert last.role == "assistant" and last.status == "interrupted" and last.content == text


def test_a_message_that_cannot_fit_is_not_stored(tiny_model, store):
    small = ChatEngine.load(tiny_model, device="cpu", max_context=64)
    s = ChatSession(small, store, options=OPTS)
    with pytest.raises(ContextOverflowError):
        s.send("fox " * 300)
    assert s.entries == [] and store.list_conversations() == []


def test_without_a_store_nothing_is_saved(engine, isolated_home):
    s = ChatSession(engine, None, options=OPTS)
    t = finish(s.send("Hello"))
    assert t.conversation_id is None and t.message_id is None and len(s.entries) == 2
    assert not (isolated_home / "data" / "history.db").exists()
