"""`ask`'s input: stdin read within a byte limit (never waited on past it without a word),
whitespace-only input refused, a byte-order mark removed, and `--truncate` cutting only the
piped material, never the PROMPT."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest

from qwenchat.cli import ask_input
from tests.cli.test_ask import qwenchat, stored
from tests.conftest import share_kernels

LINES = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(200)).encode()


def fake_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_reading_stops_at_the_limit_and_leaves_saying_so_to_the_fit(monkeypatch, capsys):
    """It warned here and fit.py's error then said the same (found hands-on): `unread` carries it."""
    fake_stdin(monkeypatch, b"x" * 5000)
    piped = ask_input.read_stdin(1000, keep_end=False)
    assert piped.text == "x" * 1000 and piped.unread and not piped.skipped
    assert capsys.readouterr().err == ""


def test_keeping_the_end_reads_on_and_keeps_only_the_last_bytes(monkeypatch, capsys):
    fake_stdin(monkeypatch, b"a" * 300_000 + b"z" * 1000)
    piped = ask_input.read_stdin(1000, keep_end=True)
    assert piped.text == "z" * 1000 and piped.skipped == 300_000 and not piped.unread
    assert "reading on to its end" in capsys.readouterr().err


def test_a_character_split_by_the_limit_is_dropped_without_a_utf8_warning(monkeypatch, capsys):
    fake_stdin(monkeypatch, "é".encode() * 1000)
    assert ask_input.read_stdin(1001, keep_end=False).text == "é" * 500
    fake_stdin(monkeypatch, "é".encode() * 1000)
    assert ask_input.read_stdin(1001, keep_end=True).text == "é" * 500
    assert "UTF-8" not in capsys.readouterr().err


def test_a_byte_order_mark_is_removed_and_whitespace_only_is_none(monkeypatch):
    fake_stdin(monkeypatch, b"\xef\xbb\xbfhello")
    assert ask_input.read_stdin(100, keep_end=False).text == "hello"
    fake_stdin(monkeypatch, b" \n\t \r\n")
    assert ask_input.read_stdin(100, keep_end=False) is None


# -- through the command ---------------------------------------------------------------------


def test_whitespace_only_stdin_or_prompt_is_a_usage_error(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "--max-tokens", "2"], isolated_home, stdin=b"  \n\t\n")
    assert r.returncode == 2 and b"nothing to ask" in r.stderr and b"Traceback" not in r.stderr
    r = qwenchat(["ask", "-m", str(tiny_model), " \n ", "--max-tokens", "2"], isolated_home, stdin=None)
    assert r.returncode == 2 and b"prompt is empty" in r.stderr
    assert stored(isolated_home) == []


def test_a_byte_order_mark_is_not_sent(tiny_model, isolated_home):
    r = qwenchat(["ask", "-m", str(tiny_model), "--max-tokens", "2"], isolated_home, stdin=b"\xef\xbb\xbfhello")
    assert r.returncode == 0, r.stderr
    assert stored(isolated_home)[0] == ("user", "hello", "complete")


def test_truncate_head_keeps_the_prompt_and_starts_the_material_on_a_line(tiny_model, isolated_home):
    args = ["ask", "-m", str(tiny_model), "Summarise this", "--context-limit", "256", "--max-tokens", "4"]
    r = qwenchat([*args, "--truncate", "head"], isolated_home, stdin=LINES)
    assert r.returncode == 0, r.stderr
    user = stored(isolated_home)[0][1]
    match = re.fullmatch(r"Summarise this\n\n\[\.\.\. (\d+ bytes and )?\d+ tokens cut \.\.\.\]\n(line \d+: .*)", user, re.S)
    assert match, user
    assert LINES.decode().endswith(match[2])
    assert b"dropped the beginning of the piped input" in r.stderr


def test_truncate_with_continue_measures_the_history_actually_sent(tiny_model, isolated_home):
    """A long history is left out for a long message (as without --truncate); the material
    is not cut down to nothing to make room for it."""
    base = ["--context-limit", "256", "--max-tokens", "4"]
    assert qwenchat(["ask", "-m", str(tiny_model), "first " * 30, *base], isolated_home).returncode == 0
    for _ in range(3):
        r = qwenchat(["ask", "-c", "Summarise this", *base, "--truncate", "tail"], isolated_home, stdin=LINES)
        assert r.returncode == 0, r.stderr
    users = [m[1] for m in stored(isolated_home) if m[0] == "user"][1:]
    assert len(users) == 3 and len(set(users)) == 1
    assert users[0].count("lazy dog") >= 3, users[0]


def test_an_endless_pipe_is_not_waited_on_past_the_limit(tiny_model, isolated_home):
    env = {**os.environ, "QWENCHAT_HOME": str(share_kernels(isolated_home)), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwenchat", "ask", "-m", str(tiny_model), "Summarise", "--max-input", "4K"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        proc.stdin.write(LINES)  # more than the limit, and the pipe stays open
        proc.stdin.flush()
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is not None, "ask waited on a pipe past its input limit"
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1 and b"input limit of 4096 bytes" in err and b"--truncate" in err, err
    assert stored(isolated_home) == []


def test_the_input_limit_is_a_config_key(tiny_model, isolated_home):
    assert qwenchat(["config", "set", "max_input", "1K"], isolated_home).returncode == 0
    r = qwenchat(["ask", "-m", str(tiny_model), "Summarise", "--max-tokens", "2"], isolated_home, stdin=LINES)
    assert r.returncode == 1 and b"input limit of 1024 bytes" in r.stderr
    r = qwenchat(["ask", "-m", str(tiny_model), "Summarise", "--max-tokens", "2", "--truncate", "tail"],
                 isolated_home, stdin=LINES)
    assert r.returncode == 0, r.stderr
    assert stored(isolated_home)[0][1].endswith("stdin was not read past 1024 bytes ...]")


def peak_rss_mb(args: list[str], home, stdin_path) -> tuple[int, float, bytes]:
    """Exit status, peak memory (MB) and stderr of one `qwenchat` run, measured in a fresh parent
    so that no other child's peak counts."""
    code = (
        "import resource, subprocess, sys\n"
        f"r = subprocess.run([sys.executable, '-m', 'qwenchat', *{args!r}], stdin=open({str(stdin_path)!r}, 'rb'),"
        " capture_output=True)\n"
        "sys.stderr.buffer.write(r.stderr)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    env = {**os.environ, "QWENCHAT_HOME": str(share_kernels(home)), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=300)
    status, kb = r.stdout.split()
    return int(status), int(kb) / 1024, r.stderr


def test_a_20mb_stdin_is_refused_or_cut_without_tokenizing_it_whole(tiny_model, isolated_home, tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(LINES * (20_000_000 // len(LINES)))
    base = ["ask", "-m", str(tiny_model), "Summarise", "--max-tokens", "2"]
    status, peak, err = peak_rss_mb(base, isolated_home, big)
    assert status == 1 and b"input limit" in err and peak < 800, (status, peak, err)
    status, peak, err = peak_rss_mb([*base, "--truncate", "head"], isolated_home, big)
    assert status == 0 and peak < 800, (status, peak, err)
    user = stored(isolated_home)[0][1]
    assert user.startswith("Summarise\n\n[... ") and user.endswith(LINES.decode()[-100:])
