"""One conversation written by several real processes and faces: two `ask --cid` processes at
once, and the app's session with `ask` (another store connection, run in this process) adding to
its conversation in between."""

from __future__ import annotations

import pytest

from qwenchat.session import ChatSession, Turn
from qwenchat.store import Store
from tests.cli.test_ask import qwenchat, start
from tests.fake_engine import FakeEngine

REPLY = ["--max-tokens", "8", "--temperature", "0"]


def finish(events) -> Turn:
    *_, turn = events
    return turn


def every_reply_answers_its_own_message(store: Store, cid: int) -> None:
    """No reply sits under another reply; each reply's parent is a user message."""
    msgs = {m.id: m for m in _all_messages(store, cid)}
    for m in msgs.values():
        if m.role == "assistant":
            assert m.parent_id is not None and msgs[m.parent_id].role == "user", (m, msgs.get(m.parent_id))


def _all_messages(store: Store, cid: int):
    seen, todo = {}, [m.id for m in store.thread(cid)]
    while todo:
        m = store.get_message(todo.pop())
        if m.id in seen:
            continue
        seen[m.id] = m
        todo += [s.id for s in store.siblings(m.id)]
        if m.parent_id is not None:
            todo.append(m.parent_id)
    # children of every known message, down the tree
    with Store.open() as s2:
        for mid in list(seen):
            leaf = s2.latest_leaf(mid)
            while leaf.id not in seen:
                seen[leaf.id] = leaf
                if leaf.parent_id is None:
                    break
                leaf = s2.get_message(leaf.parent_id)
    return list(seen.values())


@pytest.mark.slow
def test_two_ask_cid_at_once_answer_each_under_its_own_message(tiny_model, isolated_home):
    with Store.open() as store:
        finish(ChatSession(FakeEngine(), store).send("first"))
        cid = store.latest_conversation().id
    procs = [start(["ask", "--cid", str(cid), "-m", str(tiny_model), f"question {n}", *REPLY], isolated_home)
             for n in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Store.open() as store:
        every_reply_answers_its_own_message(store, cid)
        users = [m for m in _all_messages(store, cid) if m.role == "user"]
        for n in (1, 2):
            (asked,) = [m for m in users if m.content == f"question {n}"]
            # its one reply (the other process may have asked after it, having seen it: that
            # message then follows it as the other model saw it)
            replies = [m for m in _all_messages(store, cid) if m.parent_id == asked.id and m.role == "assistant"]
            assert len(replies) == 1 and replies[0].status == "complete"


@pytest.mark.slow
def test_the_app_session_sees_what_ask_added_and_the_model_does_too(tiny_model, isolated_home):
    with Store.open() as store:
        engine = FakeEngine(script=["app reply", "app reply 2"])
        app = ChatSession(engine, store)
        finish(app.send("from the app"))
        r = qwenchat(["ask", "--cid", str(app.conversation_id), "-m", str(tiny_model), "from ask", *REPLY],
                     isolated_home)
        assert r.returncode == 0, r.stderr
        assert app.sync() is True
        assert [e.content for e in app.entries][:3] == ["from the app", "app reply", "from ask"]
        finish(app.send("app again"))
        seen = [m["content"] for m in engine.prompts[-1]]
        assert seen[:3] == ["from the app", "app reply", "from ask"] and seen[-1] == "app again"
        thread = store.thread(app.conversation_id)
        assert [m.role for m in thread] == ["user", "assistant"] * 3
        every_reply_answers_its_own_message(store, app.conversation_id)
