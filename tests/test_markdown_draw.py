"""qwenchat/markdown_draw.py: how a reply's Markdown is drawn, in `ask` and in the app."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from qwenchat.markdown import chat_parser
from qwenchat.markdown_draw import ChatMarkdown


def drawn(markdown: ChatMarkdown, width: int = 40) -> list[str]:
    console = Console(width=width, color_system=None)
    return [line.rstrip() for line in "".join(
        seg.text for seg in console.render(markdown, console.options)).splitlines()]


def test_a_single_line_break_stays_a_line_break():
    assert drawn(ChatMarkdown("roses are red\nviolets are blue")) == ["roses are red", "violets are blue"]


def test_headings_are_left_aligned_and_items_numbered_as_written():
    lines = drawn(ChatMarkdown("# Title\n\n1. one\n2. two"))
    assert lines[0] == "Title"  # not centred
    assert [ln for ln in lines if ln.strip()][1:] == [" 1. one", " 2. two"]


def test_parsed_tokens_draw_as_the_text_does():
    text = "Some **bold** text\n\n- a\n- b\n\n```python\nx = 1\n```"
    assert drawn(ChatMarkdown(chat_parser().parse(text))) == drawn(ChatMarkdown(text))


def test_code_blocks_go_to_the_given_drawer():
    seen = []

    def draw(code: str, language: str) -> Text:
        seen.append((code, language))
        return Text(f"<{language}:{code}>")

    lines = drawn(ChatMarkdown("before\n\n```python\nx = 1\n```\n\n~~~\nplain\n~~~", draw_code=draw))
    assert seen == [("x = 1", "python"), ("plain", "")]
    assert "<python:x = 1>" in lines and "<:plain>" in lines


def test_control_characters_are_not_drawn():
    lines = drawn(ChatMarkdown("a \x1b[2J b\x1b]0;title\x07 c"))
    assert lines == ["a [2J b]0;title c"]


def test_a_paragraph_line_keeps_its_indentation():
    """Code written without a fence was drawn with its indentation gone: wrong Python."""
    assert drawn(ChatMarkdown("def add_numbers(a, b):\n    return a + b")) == [
        "def add_numbers(a, b):", "    return a + b"]
    assert drawn(ChatMarkdown("Roses\n  are red\n    violets\n  are blue")) == [
        "Roses", "  are red", "    violets", "  are blue"]
    assert drawn(ChatMarkdown("> quoted\n>     indented")) == ["", "▌ quoted", "▌     indented"]


def test_a_long_indented_line_wraps_after_its_indentation():
    assert drawn(ChatMarkdown("x:\n    one two three four five six"), width=20) == [
        "x:", "    one two three", "four five six"]


def test_lists_quotes_and_code_blocks_draw_as_before():
    assert drawn(ChatMarkdown("- item\n  continued\n  - nested\n    more\n- next")) == [
        "", " • item", "   continued", "    • nested", "      more", " • next"]
    assert drawn(ChatMarkdown("1. one\n   two")) == ["", " 1. one", "    two"]
    assert drawn(ChatMarkdown("> quoted\n> continued\nlazy")) == [
        "", "▌ quoted", "▌ continued", "▌ lazy"]
    seen = []

    def draw(code: str, language: str) -> Text:
        seen.append(code)
        return Text(code)

    drawn(ChatMarkdown("Code:\n\n    def f():\n        return 1", draw_code=draw))
    assert seen == ["def f():\n    return 1"]  # an indented code block after a blank line
