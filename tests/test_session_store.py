"""ChatSession's storage rules, over a scripted engine: settings per conversation, explicit
parents, conversations shared with other windows and processes, replies saved as they grow,
continue and branches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from qwenchat.engine.records import Chunk, GenerateOptions
from qwenchat.errors import StoreError
from qwenchat.session import ChatSession, Turn
from qwenchat.store import Store
from tests.fake_engine import FakeEngine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(isolated_home):
    with Store.open() as s:
        yield s


def finish(events) -> Turn:
    *_, turn = events
    assert isinstance(turn, Turn)
    return turn


def roles(store: Store, cid: int) -> list[str]:
    return [m.role for m in store.thread(cid)]


def test_a_conversation_uses_its_own_settings_and_others_start_from_the_defaults(store):
    base = GenerateOptions(temperature=0.5)
    s = ChatSession(FakeEngine(), store, options=base)
    finish(s.send("first"))
    first = s.conversation_id
    s.set_options(GenerateOptions(temperature=0.1, top_k=3))
    s.new()
    assert s.options == base  # a new chat does not inherit the last chat's settings
    finish(s.send("second"))
    second = s.conversation_id
    s.load(first)
    assert (s.options.temperature, s.options.top_k) == (0.1, 3)
    s.load(second)
    assert s.options == base  # saved with the base options, nothing leaked from `first`
    assert s.effective_options.top_k == 20 and s.effective_options.temperature == 0.5


def test_defaults_fill_every_option_from_the_base_then_the_model():
    s = ChatSession(FakeEngine(max_new_tokens=77), None, options=GenerateOptions(top_p=0.5))
    d = s.defaults
    assert (d.top_p, d.temperature, d.max_new_tokens) == (0.5, 0.7, 77)
    assert not s.is_greedy
    s.options = GenerateOptions(temperature=0)
    assert s.is_greedy


def test_model_info_and_context_used_come_from_the_session():
    s = ChatSession(FakeEngine(), None, model_label="m")
    info = s.model_info
    assert (info.label, info.precision, info.context_window) == ("m", "int8", 4096)
    assert s.context_used() == 0
    finish(s.send("one two three"))
    assert s.context_used() == len(s.engine.encode_chat(s.messages)) > 3


def test_two_sessions_on_one_conversation_keep_its_order(isolated_home):
    with Store.open() as a_store, Store.open() as b_store:
        a = ChatSession(FakeEngine(script=["A1", "A2"]), a_store)
        finish(a.send("from A"))
        b = ChatSession(FakeEngine(script=["B1"]), b_store)
        b.load(a.conversation_id)
        finish(b.send("from B"))  # A does not know about it yet
        engine_a = a.engine
        finish(a.send("A again"))
        cid = a.conversation_id
        assert [m.content for m in a_store.thread(cid)] == ["from A", "A1", "from B", "B1", "A again", "A2"]
        # the model saw B's turn before A's new message
        assert [m["content"] for m in engine_a.prompts[-1]] == ["from A", "A1", "from B", "B1", "A again"]


def test_sync_reports_what_another_window_added(isolated_home):
    with Store.open() as a_store, Store.open() as b_store:
        a = ChatSession(FakeEngine(), a_store)
        finish(a.send("hi"))
        assert a.sync() is False
        b = ChatSession(FakeEngine(), b_store)
        b.load(a.conversation_id)
        finish(b.send("more"))
        assert a.sync() is True
        assert [e.content for e in a.entries][-2] == "more"


def test_a_reply_written_while_another_window_adds_goes_under_its_own_message(isolated_home):
    hold = threading.Event()
    with Store.open() as a_store, Store.open() as b_store:
        a = ChatSession(FakeEngine(script=["ok", "a reply of several words"]), a_store)
        finish(a.send("setup"))
        a.engine.hold = hold
        cid = a.conversation_id
        events = a.send("A asks")
        first = next(events)
        assert isinstance(first, Chunk)
        b = ChatSession(FakeEngine(script=["B answer"]), b_store)
        b.load(cid)
        finish(b.send("B asks"))  # lands while A's reply is being written
        hold.set()
        turn = finish(events)
        reply = a_store.get_message(turn.message_id)
        assert a_store.get_message(reply.parent_id).content == "A asks"
        assert turn.note and "branch" in turn.note
        assert a_store.get_message(b.entries[-1].id).parent_id == b.entries[-2].id
        # neither branch has two replies back to back, and each holds what its model saw
        for leaf, engine in ((turn.message_id, a.engine), (b.entries[-1].id, b.engine)):
            a_store.set_head(cid, leaf)
            r = roles(a_store, cid)
            assert ("assistant", "assistant") not in list(zip(r, r[1:])), r
            assert [m.content for m in a_store.thread(cid)][:-1] == [m["content"] for m in engine.prompts[-1]]


def test_a_failed_save_of_the_users_message_leaves_nothing_unsaved(store, monkeypatch):
    s = ChatSession(FakeEngine(script=["one", "two", "three"]), store)
    first = finish(s.send("hello"))
    real = store.add_message

    def busy(*args, **kwargs):
        raise StoreError("the history database is busy")

    monkeypatch.setattr(store, "add_message", busy)
    with pytest.raises(StoreError):
        s.send("lost?")
    monkeypatch.setattr(store, "add_message", real)
    assert [e.content for e in s.entries] == ["hello", "one"]  # the refused message is not kept
    turn = finish(s.regenerate())
    conv = store.get_conversation(s.conversation_id)
    assert conv.head_id == turn.message_id  # never an unsaved (None) head
    assert [m.content for m in store.thread(conv.id)] == ["hello", turn.reply.text]
    assert store.get_message(turn.message_id).parent_id == first.user_message_id


def test_a_failed_regenerate_keeps_entries_equal_to_the_store(store):
    s = ChatSession(FakeEngine(script=["one"]), store)
    finish(s.send("hello"))
    s.options = GenerateOptions(max_new_tokens=0)  # refused by the engine before anything is stored
    with pytest.raises(Exception):
        s.regenerate()
    assert [e.content for e in s.entries] == [m.content for m in store.thread(s.conversation_id)]
    s.options = GenerateOptions()
    finish(s.send("next"))
    r = roles(store, s.conversation_id)
    assert r == ["user", "assistant", "user", "assistant"]


def test_continue_extends_the_same_reply(store):
    engine = FakeEngine(script=["one two three four five", "six seven"])
    s = ChatSession(engine, store, options=GenerateOptions(max_new_tokens=3))
    cut = finish(s.send("count"))
    assert cut.reply.finish_reason == "length" and cut.reply.text == "one two three"
    assert s.entries[-1].finish_reason == "length"
    events = list(s.continue_reply())
    more = "".join(e.text for e in events if isinstance(e, Chunk))
    turn = events[-1]
    assert more == " six seven" and turn.reply.text == "one two three six seven"
    assert turn.message_id == cut.message_id
    stored = store.get_message(cut.message_id)
    assert stored.content == "one two three six seven" and stored.status == "complete"
    assert turn.reply.usage.completion_tokens == 5 == stored.completion_tokens  # both turns' tokens
    assert stored.meta["usage"]["completion_tokens"] == 5
    assert engine.prompts[-1][-1] == {"role": "assistant", "content": "one two three"}
    assert [e.role for e in s.entries] == ["user", "assistant"]


def test_continue_needs_a_reply(store):
    s = ChatSession(FakeEngine(), store)
    with pytest.raises(ValueError, match="no reply"):
        s.continue_reply()


def test_branches_can_be_listed_and_switched_and_the_store_follows(store):
    s = ChatSession(FakeEngine(script=["first", "second", "after"]), store)
    t1 = finish(s.send("hello"))
    finish(s.regenerate())
    assert s.branch(1) == (2, 2) and s.branch(0) == (1, 1)
    s.switch_branch(1, -1)
    assert s.entries[1].id == t1.message_id and s.branch(1) == (1, 2)
    assert store.get_conversation(s.conversation_id).head_id == t1.message_id
    finish(s.send("go on"))  # continues the branch switched to
    again = ChatSession(FakeEngine(), store)
    again.load(s.conversation_id)
    assert [e.content for e in again.entries] == ["hello", "first", "go on", "after"]
    with pytest.raises(ValueError, match="no previous"):
        s.switch_branch(1, -1)


def test_edit_of_the_first_message_starts_a_new_root_and_keeps_the_old(store):
    s = ChatSession(FakeEngine(script=["a", "b"]), store)
    finish(s.send("hello"))
    finish(s.edit(0, "hi"))
    assert s.branch(0) == (2, 2)
    assert [m.content for m in store.thread(s.conversation_id)] == ["hi", "b"]


def test_entries_carry_time_and_reply_details(store):
    s = ChatSession(FakeEngine(), store, model_label="m")
    finish(s.send("hello"))
    assert s.entries[0].created_at and s.entries[1].created_at  # as soon as they are stored
    assert s.count_tokens("one two three") == 3
    s.load(s.conversation_id)
    reply = s.entries[1]
    assert reply.created_at and reply.meta["model"] == "m" and reply.meta["usage"]["completion_tokens"] == 5


SCRIPT = textwrap.dedent("""
    import sys
    from qwenchat.session import ChatSession
    from qwenchat.store import Store
    from tests.fake_engine import FakeEngine
    words = " ".join(f"w{i}" for i in range(400))
    s = ChatSession(FakeEngine(script=[words], delay=0.02), Store.open())
    for ev in s.send("tell me"):
        print("chunk", flush=True)
""")


def test_a_streaming_reply_survives_sigkill_as_interrupted(isolated_home):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    try:
        assert proc.stdout.readline().strip() == "chunk"
        time.sleep(2.6)  # more than two saving intervals of streaming
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    with Store.open() as store:
        conv = store.latest_conversation()
        thread = store.thread(conv.id)
    assert [m.role for m in thread] == ["user", "assistant"]
    reply = thread[1]
    assert reply.status == "interrupted"
    assert reply.content.startswith("w0 w1 w2") and len(reply.content.split()) < 400


def test_a_pending_reply_of_a_live_process_stays_pending(store):
    conv = store.create_conversation("m")
    user = store.add_message(conv.id, "user", "hi", parent_id=None)
    msg = store.add_message(conv.id, "assistant", "so far", parent_id=user.id, status="pending",
                            meta={"pid": os.getpid()})
    assert store.get_message(msg.id).status == "pending"


def test_changing_the_settings_keeps_other_facts_stored_with_them(store):
    conv = store.create_conversation("m", settings={"source": "api", "temperature": 0.3})
    s = ChatSession(FakeEngine(), store)
    s.load(conv.id)
    s.set_options(GenerateOptions(top_k=5))
    assert store.get_conversation(conv.id).settings == {"source": "api", "top_k": 5}


def test_a_question_another_process_is_answering_is_seen_until_its_reply_is_stored(store, other_process):
    from qwenchat.session import ANSWERING

    s = ChatSession(FakeEngine(script=["ok"]), store)
    finish(s.send("setup"))
    assert s.answered_elsewhere() is None
    cid = s.conversation_id
    assert ANSWERING not in store.thread(cid)[0].meta  # answered: no process id left behind
    asked = store.add_message(cid, "user", "asked elsewhere", meta={ANSWERING: other_process})
    assert s.answered_elsewhere().id == asked.id
    reply = store.add_message(cid, "assistant", "so far", status="pending", meta={"pid": other_process})
    assert s.answered_elsewhere().id == reply.id  # its reply is being written
    store.finish_message(reply.id, content="done")
    assert s.answered_elsewhere() is None
    mine = store.add_message(cid, "user", "asked here, by this process", meta={ANSWERING: os.getpid()})
    assert mine.id and s.answered_elsewhere() is None  # this process's own turn is not another's


def test_a_question_whose_process_is_gone_or_whose_reply_failed_is_not_waited_for(store):
    from qwenchat.session import ANSWERING

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    s = ChatSession(FakeEngine(script=["ok"]), store)
    finish(s.send("setup"))
    store.add_message(s.conversation_id, "user", "its process died", meta={ANSWERING: gone.pid})
    assert s.answered_elsewhere() is None

    class Failing(FakeEngine):
        def chat(self, *args, **kwargs):
            def events():
                raise RuntimeError("the engine failed before a word")
                yield  # noqa: unreachable - a generator
            return events()

    failing = ChatSession(Failing(), store)
    failing.load(s.conversation_id)
    with pytest.raises(RuntimeError):
        finish(failing.send("no reply will come"))
    last = store.thread(s.conversation_id)[-1]
    assert last.content == "no reply will come" and ANSWERING not in last.meta  # nobody waits for it


def test_a_message_stored_by_another_window_after_this_one_read_refuses_this_ones(store, other_process):
    """The narrow race of two `ask -c` at once: both read the conversation, then both stored
    their message after the same head (a branch, with one reply answering two questions)."""
    from qwenchat.errors import ConversationChanged
    from qwenchat.session import ANSWERING

    s = ChatSession(FakeEngine(script=["ok"]), store)
    finish(s.send("setup"))
    cid = s.conversation_id

    class Racing(FakeEngine):
        def chat(self, *args, **kwargs):  # between reading the conversation and storing the message
            with Store.open() as theirs:
                theirs.add_message(cid, "user", "the other window's", meta={ANSWERING: other_process})
            return super().chat(*args, **kwargs)

    racing = ChatSession(Racing(), store)
    racing.load(cid)
    with pytest.raises(ConversationChanged):
        racing.send("mine")
    stored = ["setup", "ok", "the other window's"]
    assert [m.content for m in store.thread(cid)] == stored
    assert store.get_conversation(cid).message_count == 3  # no branch: "mine" was not stored
    assert [e.content for e in racing.entries] == stored  # what is stored, shown
    assert racing.answered_elsewhere().content == "the other window's"  # so a face waits for it


def test_a_question_stored_by_another_window_after_the_check_stops_the_send(store, other_process):
    """A face checks `answered_elsewhere()`, then sends; `send` re-read the conversation and took
    a question another window stored in between as the message to follow: this one was stored
    under that unanswered question (a new-user run; 2 of 40 rounds of two processes at once)."""
    from qwenchat.errors import ConversationChanged
    from qwenchat.session import ANSWERING

    s = ChatSession(FakeEngine(script=["ok", "mine answered"]), store)
    finish(s.send("setup"))
    cid = s.conversation_id
    s.sync()
    assert s.answered_elsewhere() is None  # the face's check: free
    store.add_message(cid, "user", "the other window's", meta={ANSWERING: other_process})  # then this
    with pytest.raises(ConversationChanged):
        s.send("mine")
    assert [m.content for m in store.thread(cid)] == ["setup", "ok", "the other window's"]
    finish(s.send("mine", anyway=True))  # a stalled writer: the face sends after it all the same
    assert [m.content for m in store.thread(cid)][-2:] == ["mine", "mine answered"]


def _sender(cid: int, name: str, rounds: int, barrier, home: str) -> None:
    """One window of `test_two_processes_sending_at_once_never_chain_questions`."""
    os.environ["QWENCHAT_HOME"] = home
    from qwenchat.errors import ConversationChanged

    with Store.open() as mine:
        s = ChatSession(FakeEngine(default="a reply of words", delay=0.002), mine, model_label="fake")
        s.load(cid)
        for i in range(rounds):
            barrier.wait()
            for _ in range(200):
                try:
                    if s.answered_elsewhere() is None:
                        finish(s.send(f"{name}{i}"))
                        break
                except ConversationChanged:
                    pass
                time.sleep(0.005)


def test_two_processes_sending_at_once_never_chain_questions(store):
    """Two processes send at the same moment, 20 times: every message is stored once, every user
    message follows a reply, and no message has two children (no branch)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    conv = store.create_conversation("fake")
    store.add_message(conv.id, "user", "start")
    store.add_message(conv.id, "assistant", "ok")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_sender, args=(conv.id, n, 20, barrier, os.environ["QWENCHAT_HOME"])) for n in "AB"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    thread = store.thread(conv.id)
    assert store.get_conversation(conv.id).message_count == len(thread) == 2 + 2 * 40
    assert [m.role for m in thread] == ["user", "assistant"] * 41
    assert sorted(m.content for m in thread if m.role == "user")[:2] == ["A0", "A1"]


def test_sync_sees_the_end_of_a_reply_another_window_was_writing(store, other_process):
    """Shown as "pending" when read, it stayed so: the head does not move when a reply ends."""
    s = ChatSession(FakeEngine(script=["ok"]), store)
    finish(s.send("setup"))
    cid = s.conversation_id
    pending = store.add_message(cid, "assistant", "so far", status="pending", meta={"pid": other_process})
    assert s.sync() is True and s.entries[-1].status == "pending"
    assert s.sync() is False  # nothing new
    store.save_partial(pending.id, "so far, and more")
    assert s.sync() is True and s.entries[-1].content == "so far, and more"
    store.finish_message(pending.id, content="so far, and the end")
    assert s.sync() is True and (s.entries[-1].status, s.entries[-1].content) == ("complete", "so far, and the end")
    assert s.sync() is False


def test_sync_sees_a_reply_continued_by_another_window(store, other_process):
    """A stopped reply continued (F5) in another window kept its old, shorter text here: not
    "pending" when read, it was never looked at again, and the next message sent from here gave
    the model the old reply (a second new-user run: 346 prompt tokens after a 1,363-token reply)."""
    s = ChatSession(FakeEngine(script=["ok"]), store)
    finish(s.send("setup"))
    cid = s.conversation_id
    cut = store.add_message(cid, "assistant", "the start", status="pending", meta={"pid": other_process})
    store.finish_message(cut.id, content="the start", status="interrupted")
    assert s.sync() is True and (s.entries[-1].status, s.entries[-1].content) == ("interrupted", "the start")
    assert s.sync() is False
    store.reopen_message(cut.id, meta={"pid": other_process})  # the other window continues it
    store.save_partial(cut.id, "the start, and more")
    assert s.sync() is True and s.entries[-1].content == "the start, and more"
    store.finish_message(cut.id, content="the start, and more, and the end", status="interrupted")
    assert s.sync() is True and s.entries[-1].content == "the start, and more, and the end"
    assert s.sync() is False
    finish(s.send("and then?"))
    assert s.engine.prompts[-1][-2]["content"] == "the start, and more, and the end"  # what the model saw


def test_a_json_reply_is_asked_for_after_the_question_and_the_history_keeps_the_question(store):
    """`ask --schema` stored "Reply with JSON only, matching this JSON schema: {...}" in the
    user's message: in titles, `history show` and search (found hands-on); the app's JSON
    setting told the model nothing of the fields."""
    schema = {"type": "object", "properties": {"size": {"type": "string"}}, "required": ["size"]}
    s = ChatSession(FakeEngine(script=['{"size": "M"}', '{"size": "L"}']), store)
    s.set_options(GenerateOptions(constraint=schema))
    finish(s.send("a shirt"))
    finish(s.send("another"))
    seen = s.engine.prompts[-1]
    assert seen[0]["content"] == "a shirt"  # said once, after the question being answered
    assert seen[-1]["content"].startswith("another\n\nReply with JSON only") and '"size"' in seen[-1]["content"]
    assert [m.content for m in store.thread(s.conversation_id) if m.role == "user"] == ["a shirt", "another"]
    assert store.get_conversation(s.conversation_id).title == "a shirt"


def test_a_continued_conversation_keeps_its_schemas_field_order(store):
    """`ask --schema 'zeta, alpha int'` replied {"zeta", "alpha"}; `ask -c` then {"alpha", "zeta"}:
    the settings were stored with sorted keys, so the schema came back alphabetical and the
    grammar (which writes the properties in order) and the instruction followed it."""
    schema = {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}},
              "required": ["zeta", "alpha"]}
    first = ChatSession(FakeEngine(script=['{"zeta": "z", "alpha": 1}']), store)
    first.set_options(GenerateOptions(constraint=schema))
    finish(first.send("invent"))
    again = ChatSession(FakeEngine(script=['{"zeta": "y", "alpha": 2}']), store)
    again.load(first.conversation_id)
    assert list(again.options.constraint["properties"]) == ["zeta", "alpha"]
    finish(again.send("again"))
    told = again.engine.prompts[-1][-1]["content"]
    assert told.index('"zeta"') < told.index('"alpha"')


def test_a_conversation_continued_on_another_model_is_stored_as_that_models(store):
    """Found hands-on: a conversation begun against a server that was down, continued with
    `ask -c -m coder`, still named the server: the next `ask -c` failed on it again."""
    first = ChatSession(FakeEngine(script=["hi"]), store, model_label="http://127.0.0.1:8799/v1")
    finish(first.send("my name is Zed"))
    cid = first.conversation_id
    assert store.get_conversation(cid).model == "http://127.0.0.1:8799/v1"
    updated = store.get_conversation(cid).updated_at
    other = ChatSession(FakeEngine(script=["Zed"]), store, model_label="coder")
    other.load(cid)
    finish(other.send("what is my name?"))
    conv = store.get_conversation(cid)
    assert conv.model == "coder" and conv.updated_at > updated
