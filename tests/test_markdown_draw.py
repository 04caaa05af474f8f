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
