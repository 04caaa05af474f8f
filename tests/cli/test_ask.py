"""`qwenchat ask` on a tiny model: input, output, history, signals. Signals, a closed pipe and
what a fresh interpreter imports go through a real process (`start`, `subprocess`); the rest
runs the same command line in the test process (tests/cli/inprocess.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenchat.store import Store
from tests.cli.inprocess import run_cli
from tests.conftest import share_kernels
from tests.hub.fake_hub import fake_hub  # noqa: F401  (fixture)


def qwenchat(args: list[str], home: Path, stdin: bytes | None = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    """`qwenchat ARGS` run in the test process (stdin None: a terminal). `timeout` is kept for
    callers; a command run here cannot be cut short."""
    return run_cli(args, home, stdin)


def start(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "QWENCHAT_HOME": str(share_kernels(home)), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "qwenchat", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    """A suite started in the background by a non-interactive shell (`cmd &`, as CI runners may)
    inherits SIGINT ignored, and one started under `nohup` SIGHUP; a Python started so keeps
    ignoring them (qwenchat honours an ignored SIGHUP on purpose). The signal tests need the
    default dispositions a user's terminal gives."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def stored(home: Path) -> list[tuple[str, str, str]]:
    with Store.open(home / "data" / "history.db") as store:
        return [(m.role, m.content, m.status) for c in store.list_conversations() for m in store.thread(c.id)]


def test_argument_only_streams_reply_and_saves_both_messages(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "Hello there", "--max-tokens", "6", "--seed", "1"], isolated_home)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.endswith("\n") and "\x1b[" not in out  # plain text when stdout is not a terminal
    msgs = stored(isolated_home)
    assert msgs[0] == ("user", "Hello there", "complete")
    assert msgs[1][0] == "assistant" and msgs[1][1] == out[:-1] and msgs[1][2] == "complete"


def test_stdin_only_is_the_prompt_and_both_are_joined_with_a_blank_line(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "--max-tokens", "2"], isolated_home, stdin=b"piped text")
    assert r.returncode == 0, r.stderr
    r = qwenchat(["ask", "-m", str(tiny_model), "Summarise", "--max-tokens", "2"], isolated_home, stdin=b"the material\n")
    assert r.returncode == 0, r.stderr
    users = [m[1] for m in stored(isolated_home) if m[0] == "user"]
    assert sorted(users) == sorted(["piped text", "Summarise\n\nthe material\n"])


def test_neither_argument_nor_stdin_is_a_usage_error(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model)], isolated_home, stdin=b"")
    assert r.returncode == 2
    assert b"nothing to ask" in r.stderr and b"Traceback" not in r.stderr


def test_invalid_utf8_is_replaced_with_a_warning_and_binary_is_refused(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "--max-tokens", "2"], isolated_home, stdin=b"caf\xe9 ok")
    assert r.returncode == 0, r.stderr
    assert b"not valid UTF-8" in r.stderr
    assert ("user", "caf\ufffd ok", "complete") in stored(isolated_home)
    r = qwenchat(["ask", "-m", str(tiny_model), "x"], isolated_home, stdin=b"\x7fELF\x00\x00")
    assert r.returncode == 2 and b"binary" in r.stderr and b"Traceback" not in r.stderr


def test_json_output_has_the_documented_fields(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "Hi", "--max-tokens", "4", "--json", "--quantize", "int8"], isolated_home)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert {"text", "finish_reason", "model", "device", "dtype", "precision", "usage", "timings", "conversation_id",
            "message_id"} <= set(obj)
    assert {"prompt_tokens", "cached_tokens", "completion_tokens"} <= set(obj["usage"])
    assert {"load_s", "ttft_s", "prefill_tok_s", "decode_tok_s"} <= set(obj["timings"])
    assert obj["device"] == "cpu" and obj["dtype"] == "float32" and obj["usage"]["completion_tokens"] <= 4
    assert obj["precision"] == "int8"  # the weights (dtype, the activations', alone said float32)
    with Store.open(isolated_home / "data" / "history.db") as store:
        stored = store.get_message(obj["message_id"])
    assert stored.content == obj["text"] and stored.meta["precision"] == "int8"


def test_continue_uses_the_latest_conversation_and_no_save_stores_nothing(tiny_model, isolated_home):
    assert qwenchat(["ask", "-m", str(tiny_model), "first", "--max-tokens", "3"], isolated_home).returncode == 0
    r = qwenchat(["ask", "-c", "second", "--max-tokens", "3", "--json"], isolated_home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["conversation_id"] == 1
    assert [m[1] for m in stored(isolated_home) if m[0] == "user"] == ["first", "second"]
    assert qwenchat(["ask", "-n", "-m", str(tiny_model), "private", "--max-tokens", "2"], isolated_home).returncode == 0
    assert "private" not in [m[1] for m in stored(isolated_home)]


def test_usage_goes_to_stderr(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "Hi", "--max-tokens", "3", "-u"], isolated_home)
    assert r.returncode == 0 and b"tokens: prompt" in r.stderr and b"tokens: prompt" not in r.stdout


def test_input_too_long_names_both_counts_unless_truncated(tiny_model, isolated_home):
    long = ("fox " * 400).encode()
    base = ["ask", "-m", str(tiny_model), "Summarise", "--context-limit", "128", "--max-tokens", "4"]
    r = qwenchat(base, isolated_home, stdin=long)
    assert r.returncode == 1 and b"128" in r.stderr and b"tokens" in r.stderr and b"Traceback" not in r.stderr
    assert stored(isolated_home) == []  # a message that cannot be answered is not stored
    r = qwenchat(base + ["--truncate", "tail"], isolated_home, stdin=long)
    assert r.returncode == 0, r.stderr
    assert b"dropped" in r.stderr
    user = [m[1] for m in stored(isolated_home) if m[0] == "user"][-1]
    assert user.startswith("Summarise\n\nfox fox") and len(user) < len(long)
    assert re.fullmatch(r"Summarise\n\n(fox )+fox\n\[\.\.\. \d+ tokens cut \.\.\.\]", user), user


def test_head_closing_the_pipe_ends_quietly_with_status_141(endless_model, isolated_home):
    env = {**os.environ, "QWENCHAT_HOME": str(share_kernels(isolated_home))}
    cmd = (f"{sys.executable} -m qwenchat ask -m {endless_model} 'Hi' --max-tokens 3000 --temperature 0"
           " | head -c 20; echo \" status=${PIPESTATUS[0]}\" >&2")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, env=env, timeout=120)
    assert len(r.stdout) == 20
    assert r.stderr.decode().strip().endswith("status=141"), r.stderr  # typer's own handler said 1
    assert b"Traceback" not in r.stderr and b"BrokenPipe" not in r.stderr
    msgs = stored(isolated_home)
    assert msgs[1][0] == "assistant" and msgs[1][2] == "interrupted"


def wait_for_output(proc: subprocess.Popen, timeout: float = 60) -> bytes:
    os.set_blocking(proc.stdout.fileno(), False)
    deadline, got = time.monotonic() + timeout, b""
    while time.monotonic() < deadline and len(got) < 8:
        got += proc.stdout.read() or b""
        time.sleep(0.05)
    return got


def test_sigint_mid_reply_saves_the_partial_reply_as_interrupted(endless_model, isolated_home):
    args = ["Tell a long story", "--max-tokens", "3000", "--temperature", "0"]  # never a stop
    proc = start(["ask", "-m", str(endless_model), *args], isolated_home)
    assert wait_for_output(proc), "no output before the timeout"
    assert proc.poll() is None, "the reply ended before the signal could be sent"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert err.decode().strip().endswith("interrupted")  # the note typer used to swallow
    assert not err.decode().startswith("\n") and "\n\ninterrupted" not in err.decode()  # no blank line in a log
    msgs = stored(isolated_home)
    assert msgs[0][:2] == ("user", "Tell a long story")
    assert msgs[1][0] == "assistant" and msgs[1][2] == "interrupted" and msgs[1][1]


def test_sigkill_mid_reply_keeps_what_was_committed(endless_model, isolated_home):
    assert qwenchat(["ask", "-m", str(endless_model), "first", "--max-tokens", "3"], isolated_home).returncode == 0
    proc = start(["ask", "-c", "second", "--max-tokens", "3000", "--temperature", "0"], isolated_home)
    assert wait_for_output(proc)
    proc.kill()
    proc.wait(timeout=30)
    msgs = stored(isolated_home)
    assert [m[:1] + m[2:] for m in msgs[:3]] == [("user", "complete"), ("assistant", "complete"), ("user", "complete")]
    assert msgs[2][1] == "second"
    conn = sqlite3.connect(isolated_home / "data" / "history.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_base_model_continues_raw_text(tiny_models, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_models["base"]), "The quick brown", "--max-tokens", "3"], isolated_home)
    assert r.returncode == 0, r.stderr
    assert b"base model" in r.stderr


def test_bad_values_are_usage_or_setting_errors_without_traceback(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "x", "--temperature", "-2"], isolated_home)
    assert r.returncode == 2 and b"--temperature" in r.stderr and b"Traceback" not in r.stderr
    r = qwenchat(["ask", "-m", str(tiny_model), "x", "--truncate", "middle"], isolated_home)
    assert r.returncode == 2 and b"--truncate" in r.stderr
    r = qwenchat(["ask", "-m", str(tiny_model), "x", "--device", "tpu"], isolated_home)
    assert r.returncode == 2 and b"tpu" in r.stderr and b"Traceback" not in r.stderr


def test_unusable_data_dir_is_a_clear_error_and_no_save_still_works(tiny_model, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data folder should be")
    home = blocker / "home"
    r = qwenchat(["ask", "-m", str(tiny_model), "Hi", "--max-tokens", "2"], home)
    assert r.returncode == 1 and b"Traceback" not in r.stderr
    assert str(blocker).encode() in r.stderr
    r = qwenchat(["ask", "-n", "-m", str(tiny_model), "Hi", "--max-tokens", "2"], home)
    assert r.returncode == 0, r.stderr


def test_first_run_download_shows_progress_on_stderr(tiny_model, fake_hub, isolated_home):  # noqa: F811
    fake_hub.add_repo("Qwen/Tiny-Instruct", tiny_model)
    r = run_cli(["ask", "-m", "Qwen/Tiny-Instruct", "Hi", "--max-tokens", "2"], isolated_home,
                env={"HF_HUB_OFFLINE": None})
    assert r.returncode == 0, r.stderr
    size_mb = (tiny_model / "model.safetensors").stat().st_size / 1e6
    assert f"{size_mb:.1f}/{size_mb:.1f} MB".encode() in r.stderr or f"{size_mb:.0f} MB".encode() in r.stderr, r.stderr


def test_ask_on_a_local_model_imports_no_tui_hub_rich_or_torch_compiler(tiny_model, isolated_home):
    """Start-up time: a plain `ask` with a model folder needs none of them (torch._dynamo, pulled in
    by torch.nn.attention.bias, added 1.5-2 s to every start on a 2-core EPYC)."""
    code = (
        "import sys\n"
        "from qwenchat.cli import run\n"
        f"rc = run(['ask', '-m', {str(tiny_model)!r}, 'Hi', '--max-tokens', '2', '--temperature', '0.5',"
        " '--stop', 'a', '--stop', 'b'])\n"
        "print(rc, *sorted(m for m in ('textual', 'huggingface_hub', 'rich', 'torch._dynamo') if m in sys.modules))\n"
    )
    share_kernels(isolated_home)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=os.environ, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines()[-1] == "0"


def test_bad_option_values_and_unknown_options_are_usage_errors_without_traceback(tiny_model, isolated_home):
    for args in (["--max-tokens", "many"], ["--bogus"]):
        r = qwenchat(["ask", "-m", str(tiny_model), "x", *args], isolated_home)
        assert r.returncode == 2 and b"Traceback" not in r.stderr, r.stderr
        assert (b"--max-tokens" if args[0] == "--max-tokens" else b"--bogus") in r.stderr
    r = qwenchat(["no-such-command"], isolated_home)
    assert r.returncode == 2 and b"no-such-command" in r.stderr and b"Traceback" not in r.stderr


def test_sigint_mid_reply_stops_it_with_its_counts_and_saves_what_was_shown(endless_model, isolated_home):
    """`ask -u` interrupted with Ctrl+C printed no token counts: the interrupt was raised inside the
    reply's stream, so no final reply came. The first Ctrl+C now stops the reply within a token."""
    args = ["Tell a long story", "--max-tokens", "3000", "--temperature", "0", "-u"]
    proc = start(["ask", "-m", str(endless_model), *args], isolated_home)
    shown = wait_for_output(proc)
    assert shown and proc.poll() is None, "the reply ended before the signal could be sent"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    text, err = (shown + out).decode(), err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().endswith("interrupted")
    counts = re.search(r"completion (\d+); finish: cancelled", err)
    assert counts and int(counts.group(1)) > 0, err
    msgs = stored(isolated_home)
    assert msgs[1][0] == "assistant" and msgs[1][2] == "interrupted"
    assert msgs[1][1] == text.rstrip("\n")  # the reply as saved is the reply as shown
