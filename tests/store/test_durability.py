"""Several processes on one database, and a process killed with SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from qwenchat.store import Store

ROOT = Path(__file__).resolve().parents[2]

# One chat turn the way the session layer writes it: the user message first, then a pending
# reply that is finished. Prints the ids once each transaction has committed.
WRITER = r"""
import sys
from qwenchat.store import Store
path, label, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Store.open(path) as store:
    conv = store.create_conversation("m", title=label)
    print(f"conv {conv.id}", flush=True)
    i = 0
    while turns < 0 or i < turns:
        user = store.add_message(conv.id, "user", f"{label} question {i} " + "q" * (i % 7) * 300)
        reply = store.add_message(conv.id, "assistant", "", status="pending")
        store.finish_message(reply.id, content=f"{label} answer {i} " + "a" * 2000,
                             status="complete", meta={"turn": i})
        print(f"turn {i} {user.id} {reply.id}", flush=True)
        i += 1
"""


def _spawn(path: Path, label: str, turns: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), label, str(turns)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_processes_write_200_turns_each_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    Store.open(path).close()
    procs = [_spawn(path, label, 200) for label in ("alpha", "beta")]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    with Store.open(path) as store:
        convs = {c.title: c for c in store.list_conversations()}
        assert set(convs) == {"alpha", "beta"}
        for label, conv in convs.items():
            thread = store.thread(conv.id)
            assert len(thread) == 400 and conv.message_count == 400
            assert [m.role for m in thread] == ["user", "assistant"] * 200
            for i in range(200):
                user, reply = thread[2 * i], thread[2 * i + 1]
                assert user.content.startswith(f"{label} question {i} ")
                assert reply.content.startswith(f"{label} answer {i} ")
                assert reply.status == "complete" and reply.meta == {"turn": i}
                assert reply.parent_id == user.id
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigkill_mid_writes_keeps_every_committed_message(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    Store.open(path).close()
    committed: dict[int, int] = {}  # user id -> reply id, as reported after commit
    for round_ in range(3):
        proc = _spawn(path, f"round{round_}", -1)
        assert proc.stdout is not None
        proc.stdout.readline()  # "conv N"
        target = 30 + 17 * round_
        for _ in range(target):
            line = proc.stdout.readline()
            assert line.startswith("turn "), proc.stderr.read() if proc.stderr else line
            _, _, user_id, reply_id = line.split()
            committed[int(user_id)] = int(reply_id)
        time.sleep(0.002 * round_)  # land the kill at different points of a write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Store.open(path) as store:
        for user_id, reply_id in committed.items():
            user, reply = store.get_message(user_id), store.get_message(reply_id)
            assert user.role == "user" and reply.parent_id == user_id
            assert reply.status == "complete" and reply.content.endswith("a" * 2000)
        # the full-text index still matches the table (raises SQLITE_CORRUPT_VTAB if not)
        store._conn.execute(
            "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)"
        )
        assert len(store.list_conversations()) == 3
        # and the database still takes writes
        conv = store.latest_conversation()
        store.add_message(conv.id, "user", "after the crash")


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    procs = [_spawn(path, f"p{i}", 5) for i in range(4)]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Store.open(path) as store:
        assert sorted(c.title for c in store.list_conversations()) == ["p0", "p1", "p2", "p3"]
        assert all(c.message_count == 10 for c in store.list_conversations())


# Appends to one conversation the way two windows do: read the head, then add after it, but
# only if it is still the head (`expect_head`); another window's message in between means reading
# again. Prints how many times that happened.
APPENDER = r"""
import sys
from qwenchat.errors import ConversationChanged
from qwenchat.store import Store
path, label, cid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with Store.open(path) as store:
    done = clashes = 0
    while done < n:
        head = store.get_conversation(cid).head_id
        try:
            store.add_message(cid, "user", f"{label} {done}", parent_id=head, expect_head=head)
            done += 1
        except ConversationChanged:
            clashes += 1
print(clashes, flush=True)
"""


def test_two_processes_appending_after_the_head_they_read_never_branch(tmp_path: Path) -> None:
    """Two `ask -c` at once read the same head and each stored its message after it: a branch
    (one reply then answered two questions in a row). The store now refuses the second."""
    path = tmp_path / "shared.db"
    with Store.open(path) as store:
        cid = store.create_conversation("m").id
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), label, str(cid), "150"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for label in ("a", "b")]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    with Store.open(path) as store:
        thread = store.thread(cid)
        assert len(thread) == 300 == store.get_conversation(cid).message_count  # one chain, no branch
        assert all(m.parent_id == prev.id for prev, m in zip(thread, thread[1:]))
        for label in ("a", "b"):
            assert [m.content for m in thread if m.content.startswith(label)] == [f"{label} {i}" for i in range(150)]
