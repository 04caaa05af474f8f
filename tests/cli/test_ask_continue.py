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
