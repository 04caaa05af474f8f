"""`ask -c` / `--cid` follow the one continuation rule: the conversation's own model (not the
configured default) unless -m is given, its own saved settings, and this command line's options
over them."""

from __future__ import annotations

import json
import subprocess

from qwenchat.store import Store
from tests.cli.inprocess import run_cli


def ask(args: list[str], home, **env: str) -> subprocess.CompletedProcess:
    return run_cli(["ask", *args], home, env=env)


def test_continue_runs_on_the_conversations_model_and_settings(tiny_model, isolated_home):
    with Store.open() as store:
        conv = store.create_conversation(str(tiny_model), settings={"max_new_tokens": 2, "temperature": 0})
        user = store.add_message(conv.id, "user", "hello", parent_id=None)
        store.add_message(conv.id, "assistant", "hi", parent_id=user.id)
    configured_elsewhere = {"QWENCHAT_MODEL": "no-such-model-anywhere"}
    r = ask(["-c", "--json", "again"], isolated_home, **configured_elsewhere)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["usage"]["completion_tokens"] <= 2  # the conversation's own max tokens
    r = ask(["--cid", str(conv.id), "--max-tokens", "4", "more"], isolated_home, **configured_elsewhere)
    assert r.returncode == 0, r.stderr
    with Store.open() as store:
        thread = store.thread(conv.id)
        replies = [m for m in thread if m.role == "assistant"]
    assert len(replies) == 3, [(m.role, m.content) for m in thread]
    used = [m.meta.get("settings") for m in replies[1:]]
    assert used[0]["max_new_tokens"] == 2 and used[1] == {"max_new_tokens": 4, "temperature": 0}  # the flag wins


def _busy_conversation(other_pid: int):
    """A conversation whose last message is a reply another process is still writing."""
    with Store.open() as store:
        conv = store.create_conversation("m")
        user = store.add_message(conv.id, "user", "first", parent_id=None)
        reply = store.add_message(conv.id, "assistant", "so far", parent_id=user.id, status="pending",
                                  meta={"pid": other_pid})
    return conv.id, reply.id


def test_system_on_a_continued_conversation_replaces_its_prompt_and_says_so(tiny_model, isolated_home):
    """It was replaced silently (found hands-on), while --help said "of a new conversation"."""
    with Store.open() as store:
        conv = store.create_conversation(str(tiny_model), "talk like a pirate", settings={"max_new_tokens": 2})
        user = store.add_message(conv.id, "user", "hello", parent_id=None)
        store.add_message(conv.id, "assistant", "arr", parent_id=user.id)
    r = ask(["--cid", str(conv.id), "-s", "be brief", "again"], isolated_home)
    assert r.returncode == 0, r.stderr
    assert b"system prompt is replaced" in r.stderr
    with Store.open() as store:
        assert store.get_conversation(conv.id).system_prompt == "be brief"
    r = ask(["--cid", str(conv.id), "-s", "be brief", "and again"], isolated_home)
    assert r.returncode == 0 and b"replaced" not in r.stderr  # the same prompt: nothing to say


def test_system_and_preset_together_are_a_usage_error(isolated_home):
    """The preset won and --system was dropped without a word (found hands-on)."""
    r = ask(["--preset", "fr", "-s", "other", "hello"], isolated_home)
    assert r.returncode == 2 and b"--system and --preset both given" in r.stderr


def test_a_message_waits_for_the_reply_another_window_is_writing(isolated_home, monkeypatch, capsys, other_process):
    """Two `ask -c` at once (found hands-on): the second one's message followed the first one's
    unanswered question, its reply answered both, and the first reply went to a branch."""
    import threading
    import time

    from qwenchat import other_window
    from qwenchat.cli import ask as ask_mod
    from qwenchat.session import ChatSession
    from tests.fake_engine import FakeEngine

    cid, reply_id = _busy_conversation(other_process)
    monkeypatch.setattr(other_window, "POLL_S", 0.02)
    with Store.open() as store:
        session = ChatSession(FakeEngine(script=["second reply"]), store)
        session.load(cid)

        def the_other_window_ends_its_reply() -> None:
            time.sleep(0.3)
            with Store.open() as theirs:
                theirs.finish_message(reply_id, content="so far, and the end")

        threading.Thread(target=the_other_window_ends_its_reply).start()
        ask_mod._wait_for_other_windows(session)
        assert store.get_message(reply_id).status == "complete"  # it waited for the end
        ask_mod._run(session, "second", pretty=False, output="none")
        thread = [(m.role, m.content) for m in store.thread(cid)]
    assert thread == [("user", "first"), ("assistant", "so far, and the end"), ("user", "second"),
                      ("assistant", "second reply")]
    assert "waits for it" in capsys.readouterr().err


def test_a_message_that_loses_the_race_to_another_window_waits_for_its_reply(isolated_home, monkeypatch, capsys, other_process):
    """Both found the conversation free a moment apart (seen once in three hand-run tries of
    two `ask -c` at once): the other's message is stored first, so this one waits for its reply
    and follows it."""
    import threading
    import time

    from qwenchat import other_window
    from qwenchat.cli import ask as ask_mod
    from qwenchat.session import ANSWERING, ChatSession
    from tests.fake_engine import FakeEngine

    with Store.open() as store:
        cid = store.create_conversation("m").id
        store.add_message(cid, "user", "first", parent_id=None)
        store.add_message(cid, "assistant", "first reply")

    def the_other_window_answers() -> None:
        with Store.open() as theirs:
            question = theirs.add_message(cid, "user", "theirs", meta={ANSWERING: other_process})
            time.sleep(0.3)
            theirs.add_message(cid, "assistant", "their reply")
            theirs.merge_meta(question.id, {ANSWERING: None})

    class Racing(FakeEngine):
        raced = None

        def chat(self, *args, **kwargs):
            if self.raced is None:  # it stores its message just after this window read
                self.raced = threading.Thread(target=the_other_window_answers)
                self.raced.start()
                time.sleep(0.1)
            return super().chat(*args, **kwargs)

    monkeypatch.setattr(other_window, "POLL_S", 0.02)
    engine = Racing(default="my reply")  # asked twice: the first try is dropped
    with Store.open() as store:
        session = ChatSession(engine, store)
        session.load(cid)
        ask_mod._run(session, "mine", pretty=False, output="none")
        engine.raced.join()
        thread = [(m.role, m.content) for m in store.thread(cid)]
        assert store.get_conversation(cid).message_count == 6  # no branch
    assert thread == [("user", "first"), ("assistant", "first reply"), ("user", "theirs"),
                      ("assistant", "their reply"), ("user", "mine"), ("assistant", "my reply")]
    assert "waits for it" in capsys.readouterr().err


def test_a_message_stops_waiting_when_nothing_changes_there(isolated_home, monkeypatch, capsys, other_process):

    from qwenchat import other_window
    from qwenchat.cli import ask as ask_mod
    from qwenchat.session import ChatSession
    from tests.fake_engine import FakeEngine

    cid, _ = _busy_conversation(other_process)
    monkeypatch.setattr(other_window, "POLL_S", 0.02)
    monkeypatch.setattr(other_window, "STUCK_S", 0.2)
    with Store.open() as store:
        session = ChatSession(FakeEngine(script=["mine answered"]), store)
        session.load(cid)
        assert ask_mod._wait_for_other_windows(session) is True  # gave up: a hung writer, or a reused pid
        assert "nothing changed there for 0 s: sending now" in capsys.readouterr().err
        list(ask_mod._begin(session, "mine"))  # and sends indeed, though the writer still "lives"
        assert [m.content for m in store.thread(cid)] == ["first", "so far", "mine", "mine answered"]


def test_the_same_message_after_a_failed_reply_is_answered_not_stored_twice(isolated_home):
    """Seen against a server that refused the first try: `ask -c "again"` twice stored "again"
    twice in a row, and the reply answered both."""
    from qwenchat.cli import ask as ask_mod
    from qwenchat.session import ChatSession
    from tests.fake_engine import FakeEngine

    class FailsOnce(FakeEngine):
        calls = 0

        def chat(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 2:  # the first "again"

                def events():
                    raise RuntimeError("the server could not be reached")
                    yield  # noqa: unreachable - a generator
                return events()
            return super().chat(*args, **kwargs)

    with Store.open() as store:
        session = ChatSession(FailsOnce(script=["first reply", "the answer"]), store)
        ask_mod._run(session, "first", pretty=False, output="none")
        try:
            ask_mod._run(session, "again", pretty=False, output="none")
        except RuntimeError:
            pass
        assert [m.content for m in store.thread(session.conversation_id)][-1] == "again"  # kept, unanswered
        ask_mod._run(session, "again", pretty=False, output="none")
        thread = [(m.role, m.content) for m in store.thread(session.conversation_id)]
    assert thread == [("user", "first"), ("assistant", "first reply"), ("user", "again"), ("assistant", "the answer")]
