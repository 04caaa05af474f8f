"""`ask`'s input: the PROMPT argument checked, and piped stdin read within a byte limit.

Stdin is read in chunks and never past the limit, so a huge or endless pipe costs at most the
limit in memory and is never tokenized whole: with `--truncate head` (keep the end) reading goes
on to the end of the pipe keeping only the last `limit` bytes, otherwise it stops at the limit.
Either way stderr says so the moment the limit is reached, so a pipe that never closes is not
waited on without a word. A UTF-8 byte-order mark is removed; whitespace-only input counts as
none. Nothing here knows about models; `qwenchat.fit` measures what was read.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from qwenchat.cli.app import warn
from qwenchat.errors import UsageError
from qwenchat.fit import Piped

CHUNK = 1 << 16
BOM = "\ufeff"


def check_prompt(prompt: str | None, stdin_is_terminal: bool) -> None:
    """Refuse, before anything is loaded, a command line that has nothing to ask."""
    if prompt is not None and not prompt.strip():
        raise UsageError("the prompt is empty (or only whitespace)",
                         'give a question: qwenchat ask "...", or leave it out to send stdin alone')
    if prompt is None and stdin_is_terminal:
        raise nothing_to_ask()


def nothing_to_ask(detail: str = "") -> UsageError:
    return UsageError(
        f"nothing to ask: give a PROMPT argument or pipe text on stdin{detail}",
        'qwenchat ask "question"   or   cat file | qwenchat ask "summarise this"',
    )


def stdin_is_terminal() -> bool:
    """True when there is no piped stdin to read (a terminal, or no stdin at all)."""
    stream = sys.stdin
    if stream is None or stream.closed:
        return True
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return True


def read_stdin(limit: int, keep_end: bool) -> Piped | None:
    """Piped stdin as text, or None when there is none (a terminal, empty or whitespace-only).

    At most `limit` bytes are kept: the first ones (reading stops there), or with `keep_end`
    the last ones (reading goes on to the end of the pipe)."""
    if stdin_is_terminal():
        return None
    try:
        source = sys.stdin.buffer
    except (AttributeError, ValueError):
        return None
    data, skipped, unread = (_read_tail if keep_end else _read_head)(source, limit)
    if not data:
        return None
    if b"\x00" in data:
        raise UsageError(
            "stdin holds binary data (NUL bytes); qwenchat reads text",
            "pipe text, e.g. extract it first (pdftotext, strings, ...)",
        )
    text = _decode(data, cut_front=skipped > 0, cut_back=unread)
    if not skipped:
        text = text.removeprefix(BOM)
    if not text.strip():
        return None
    return Piped(text, skipped, unread, limit)


def _read_head(source: BinaryIO, limit: int) -> tuple[bytes, int, bool]:
    """The first `limit` bytes; whether more followed (reading stops at the limit)."""
    parts, size = [], 0
    while size <= limit:
        chunk = source.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(parts), 0, False
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)[:limit], 0, True  # said by fit.py: an error, or the cut marked in the message


def _read_tail(source: BinaryIO, limit: int) -> tuple[bytes, int, bool]:
    """The last `limit` bytes of the whole stream and how many bytes before them were skipped."""
    buf, skipped, told = bytearray(), 0, False
    while chunk := source.read(CHUNK):
        buf += chunk
        if len(buf) > 2 * limit:  # trim now and then, not every chunk
            skipped += len(buf) - limit
            del buf[: len(buf) - limit]
        if not told and skipped + len(buf) > limit:
            warn(f"stdin passed the input limit of {limit} bytes (--max-input): reading on to its end"
                 " to keep the last part (--truncate head); close the pipe or press Ctrl+C to stop")
            told = True
    if len(buf) > limit:
        skipped += len(buf) - limit
        del buf[: len(buf) - limit]
    return bytes(buf), skipped, False


def _decode(data: bytes, cut_front: bool, cut_back: bool) -> str:
    """UTF-8 text; a character split by a cut is dropped, other bad bytes replaced (warned)."""
    if cut_back:
        data = _drop_partial_end(data)
    if cut_front:
        start = 0
        while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
            start += 1
        data = data[start:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        warn(f"stdin is not valid UTF-8 (byte {e.start}); undecodable bytes were replaced with U+FFFD")
        return data.decode("utf-8", errors="replace")


def _drop_partial_end(data: bytes) -> bytes:
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # the lead byte of the last character: is the character whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data
