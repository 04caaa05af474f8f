"""qwenchat.attach: reading a file into a fenced block, refusing what cannot be attached."""

from __future__ import annotations

import os
import sys

import pytest

from qwenchat.attach import (
    AttachError, check_fits, estimate_tokens, fenced, insert_into, is_binary, parse_file_command, read_attachment,
)


def test_text_file_becomes_a_block_named_by_the_file(tmp_path):
    f = tmp_path / "notes.py"
    f.write_text("def f():\n    return 1\n", encoding="utf-8")
    a = read_attachment(f)
    assert a.encoding == "utf-8" and a.name == "notes.py"
    assert a.block == "```notes.py\ndef f():\n    return 1\n```"


def test_fence_is_longer_than_any_backtick_run_inside():
    text = "Use:\n```sh\nls\n```\nand ````four````"
    block = fenced("README.md", text)
    assert block.startswith("`````README.md\n") and block.endswith("\n`````")
    assert text in block


def test_crlf_and_bom_are_normalised(tmp_path):
    f = tmp_path / "w.txt"
    f.write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    assert read_attachment(f).text == "a\nb\n"


def test_non_utf8_text_is_decoded_byte_for_byte(tmp_path):
    f = tmp_path / "legacy.txt"
    f.write_bytes("café naïve\n".encode("latin-1"))
    a = read_attachment(f)
    assert a.encoding == "latin-1" and a.text == "café naïve\n"


def test_utf16_with_bom_is_text(tmp_path):
    f = tmp_path / "win.txt"
    f.write_bytes("héllo\r\nworld".encode("utf-16"))
    a = read_attachment(f)
    assert a.encoding == "utf-16" and a.text == "héllo\nworld"


def test_binary_file_is_refused(tmp_path):
    f = tmp_path / "image.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    with pytest.raises(AttachError) as e:
        read_attachment(f)
    assert "binary" in e.value.message and "image.png" in e.value.message and e.value.hint
    assert is_binary(bytes(range(1, 32)) * 10) and not is_binary(b"plain text\n\tindented\n")


def test_missing_file_and_folder_are_clear(tmp_path):
    with pytest.raises(AttachError, match="no such file") as e:
        read_attachment(tmp_path / "nope.txt")
    assert "nope.txt" in e.value.message
    with pytest.raises(AttachError, match="is a folder"):
        read_attachment(tmp_path)


def test_too_large_is_refused_before_reading(tmp_path):
    f = tmp_path / "big.log"
    f.write_text("x" * 5000)
    with pytest.raises(AttachError, match="too large"):
        read_attachment(f, max_bytes=4096)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_is_clear(tmp_path):
    f = tmp_path / "secret.txt"
    f.write_text("s")
    f.chmod(0)
    try:
        with pytest.raises(AttachError, match="cannot read"):
            read_attachment(f)
    finally:
        f.chmod(0o600)


def test_check_fits_against_what_is_left_of_the_window(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("word " * 400)  # ~2000 chars: ~500 tokens with its fence
    a = read_attachment(f)
    check_fits(a, "explain", used=100, window=4096)  # fits: no error
    with pytest.raises(AttachError) as e:
        check_fits(a, "explain", used=3800, window=4096)
    assert "a.txt" in e.value.message and "4,096" in e.value.message
    assert a.tokens == estimate_tokens(a.block) > 0


def test_insert_into_keeps_what_was_typed():
    a = fenced("x.txt", "hi")
    assert insert_into("", _att("x.txt", "hi")) == a + "\n"
    assert insert_into("Summarise:\n", _att("x.txt", "hi")) == "Summarise:\n\n" + a + "\n"


def test_words_after_the_path_on_its_line_begin_the_message(tmp_path):
    """`/file /path/README.md summarise this` said 'no such file: /path/README.md summarise this'
    (a new-user run): the words after an existing file's path are the message."""
    (tmp_path / "notes.md").write_text("n")
    (tmp_path / "my notes.md").write_text("m")
    f, spaced = str(tmp_path / "notes.md"), str(tmp_path / "my notes.md")
    assert parse_file_command(f"/file {f} summarise this") == (f, "summarise this")
    assert parse_file_command(f"/file {f} summarise\nin French") == (f, "summarise\nin French")
    assert parse_file_command(f"/file {spaced} and more") == (spaced, "and more")  # the longest that exists
    assert parse_file_command(f"/file '{spaced}' and more") == (spaced, "and more")
    # none exists: the error names the first word, not the whole line (a new-user run)
    assert parse_file_command(f"/file {tmp_path}/missing.md summarise\nthis") == (f"{tmp_path}/missing.md", "summarise\nthis")
    assert parse_file_command("/file ~nosuchuser0/a.md b") == ("~nosuchuser0/a.md", "b")  # no exception
    with pytest.raises(AttachError, match="quote a path with spaces"):
        read_attachment(f"{tmp_path}/missing.md")
    with pytest.raises(AttachError, match="no user's home folder"):
        read_attachment("~nosuchuser0/a.md")


def test_parse_file_command():
    assert parse_file_command("/file src/app.py") == ("src/app.py", "")
    assert parse_file_command("/file 'my file.txt'\nwhat does it do?") == ("my file.txt", "what does it do?")
    assert parse_file_command("/file") == ("", "")
    assert parse_file_command("/files x") is None
    assert parse_file_command("see /file x") is None


def _att(name: str, text: str):
    from pathlib import Path

    from qwenchat.attach import Attachment

    return Attachment(Path(name), text, "utf-8")
