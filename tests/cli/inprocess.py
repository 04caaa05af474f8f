"""Run a `qwenchat` command line inside the test process, with the result a real process gives
(exit status, stdout and stderr bytes), so tests that are about what a command does need not pay
for a new interpreter importing torch on every call (3-10 s each on the 2-core CI machine).

Where a real process IS the point (signals, a closed pipe, two processes at once, what an
interpreter imports) tests keep starting one; see tests/cli/test_ask.py's `start`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


class _NoStdin(io.TextIOWrapper):
    """What a process started from a terminal has on stdin: a terminal, never read here."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")

    def isatty(self) -> bool:
        return True


def _stream(data: bytes = b"") -> io.TextIOWrapper:
    # Not a terminal, UTF-8 with the interpreter's own error handling for stdio, like a pipe.
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="backslashreplace", write_through=True)


@contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(
    args: list[str], home: Path, stdin: bytes | None = b"", env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """`qwenchat ARGS` with QWENCHAT_HOME=home: exit status as `qwenchat.cli.main` would exit,
    stdout and stderr as bytes. stdin: the bytes piped in, or None for a terminal. An exception
    escaping the command becomes a traceback on stderr and status 1, as in a real process."""
    from qwenchat.cli import run

    streams = (sys.stdin, sys.stdout, sys.stderr)
    sys.stdin = _NoStdin() if stdin is None else _stream(stdin)
    out, err = _stream(), _stream()
    sys.stdout, sys.stderr = out, err
    try:
        with _environment({"QWENCHAT_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}):
            try:
                code = run(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # noqa: BLE001 - what the interpreter would print and exit with
                err.write(traceback.format_exc())
                code = 1
        out.flush()
        err.flush()
        return subprocess.CompletedProcess(["qwenchat", *args], code, out.buffer.getvalue(), err.buffer.getvalue())
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
