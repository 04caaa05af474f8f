"""Attaching a file to a message: read it as text and wrap it in a fenced block named by the file.

The contract: `read_attachment(path)` returns an `Attachment` or raises `AttachError` (a
`QwenchatError`: a one-line message naming the problem and a hint) for a missing file, a folder,
an unreadable file or a binary one. Text that is not UTF-8 is decoded as Latin-1 (every byte maps
to a character, so nothing is lost or refused) and the attachment says so; UTF-16 with a byte
order mark (Windows editors) is read as such. `check_fits` compares an estimate of the file's
tokens with what is left of the context window.

Knows nothing about the model, the store or the UI (no torch, no textual), so the app and any
other face can use it.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwenchat.errors import QwenchatError
from qwenchat.paths import user_path

# Larger than any context window we run (a 32K-token window is ~130 KB of text): refuse before
# reading a huge file into memory just to say it does not fit.
MAX_BYTES = 4 * 1024 * 1024
# Bytes sniffed to tell text from binary, as git and grep do.
SNIFF_BYTES = 8192
# Qwen's tokenizer averages 3.5-4.5 characters a token on English and code; 4 keeps the
# estimate low, so a file is refused only when it surely cannot fit (the session's own check
# before sending stays the exact one).
CHARS_PER_TOKEN = 4

_FILE_COMMAND = re.compile(r"\A/file(?:[ \t]+(?P<path>[^\n]*))?(?:\n(?P<rest>.*))?\Z", re.S)


class AttachError(QwenchatError):
    """A file cannot be attached (missing, a folder, unreadable, binary, too large)."""


@dataclass(frozen=True)
class Attachment:
    path: Path
    text: str
    encoding: str  # "utf-8", "utf-16" (with its BOM) or "latin-1" (not UTF-8: decoded byte for byte)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def block(self) -> str:
        return fenced(self.name, self.text)

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.block)


def read_attachment(path: str | Path, max_bytes: int = MAX_BYTES) -> Attachment:
    try:
        p = Path(path).expanduser()
    except RuntimeError:  # `~name/...` where no user has that name
        raise AttachError(f"no such file: {path} (no user's home folder is named so)",
                          "check the path (~ alone is your home folder)") from None
    if not p.exists():
        raise AttachError(f"no such file: {p}", "check the path (a relative path starts in the folder qwenchat runs in; "
                          "quote a path with spaces: /file \"my notes.md\")")
    if p.is_dir():
        raise AttachError(f"{p} is a folder, not a file", "attach one file at a time")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise AttachError(f"{p.name} is too large to attach ({_size(size)}; the limit is {_size(max_bytes)})",
                              "attach a smaller file or an excerpt of it")
        data = p.read_bytes()
    except OSError as e:
        raise AttachError(f"cannot read {p}: {e.strerror or e}", "check the file's permissions") from e
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # NUL bytes, but text
        try:
            return Attachment(p, _normalise(data.decode("utf-16")), "utf-16")
        except UnicodeDecodeError:
            pass
    if is_binary(data):
        raise AttachError(f"{p.name} looks like a binary file, not text",
                          "attach a text file (source code, a log, Markdown, CSV, ...)")
    try:
        return Attachment(p, _normalise(data.decode("utf-8-sig")), "utf-8")
    except UnicodeDecodeError:
        return Attachment(p, _normalise(data.decode("latin-1")), "latin-1")


def is_binary(data: bytes) -> bool:
    """A NUL byte in the first few KB, or mostly control characters: not text."""
    head = data[:SNIFF_BYTES]
    if b"\0" in head:
        return True
    if not head:
        return False
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return control / len(head) > 0.1


def fenced(name: str, text: str) -> str:
    """`text` in a Markdown code fence whose info string is the file name; the fence is longer
    than any run of backticks inside, so a file that holds fences itself stays one block."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{name}\n{text.rstrip(chr(10))}\n{fence}"


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def check_fits(attachment: Attachment, message: str, used: int, window: int) -> None:
    """Refuse an attachment that cannot fit in what is left of the context window, given the
    tokens the conversation holds now (`used`) and the message typed so far."""
    free = window - used - estimate_tokens(message)
    if attachment.tokens > free:
        raise AttachError(
            f"{attachment.name} is about {attachment.tokens:,} tokens, but only {max(free, 0):,} of the "
            f"{window:,}-token context window are free",
            "attach a smaller file or an excerpt, or start a new chat (Ctrl+N)",
        )


def insert_into(message: str, attachment: Attachment) -> str:
    """The message with the file's block added after what was typed (a blank line between)."""
    head = message.rstrip("\n")
    return f"{head}\n\n{attachment.block}\n" if head.strip() else f"{attachment.block}\n"


def _is_file(path: str) -> bool:
    return user_path(path).is_file()  # `~someone` of no user: not a file (read_attachment says why)


def parse_file_command(text: str, is_file: Callable[[str], bool] = _is_file) -> tuple[str, str] | None:
    """`/file PATH` on the first line of the input: (PATH, the rest of the message), or None
    when the input does not start with the command. PATH may be quoted; an empty PATH is "".
    Words after PATH on its line begin the message (`/file notes.md summarise this`): PATH is
    the quoted part, else the longest run of the line's first words that `is_file`, else the
    first word (the error names that path, not the whole line; its fix mentions quotes)."""
    m = _FILE_COMMAND.match(text)
    if m is None:
        return None
    line, rest = (m.group("path") or "").strip(), m.group("rest") or ""
    quoted = re.match(r"""(['"])(.+?)\1(?:\s+(.*))?\Z""", line, re.S)
    if quoted:
        return quoted.group(2), _joined(quoted.group(3), rest)
    if not line or is_file(line):
        return line, rest
    words = line.split()
    for n in range(len(words) - 1, 0, -1):
        path = " ".join(words[:n])
        if is_file(path):
            return path, _joined(" ".join(words[n:]), rest)
    return words[0], _joined(" ".join(words[1:]), rest)


def _joined(words: str | None, rest: str) -> str:
    """The words typed after PATH on its line, then the message's next lines."""
    return "\n".join(part for part in (words, rest) if part)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"
