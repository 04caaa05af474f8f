"""qwenchat/markdown.py: the reply parser, a reply's top-level blocks, and the same blocks found
incrementally while it streams."""

from __future__ import annotations

import random

import pytest

from qwenchat.markdown import GrowingDocument, chat_parser, code_blocks, split_blocks

# Every kind of block a reply has, with the cases where later text changes an earlier line's
# meaning: a list going on after a blank line, a setext underline, a table's delimiter row, a
# lazy continuation, an indented code block, a fence with blank lines inside.
REPLIES = [
    "# Head\n\npara one\nline two\n\n\n1. a\n2. b\n\n3. c\n\n```py\nx=1\n\n\ny\n```\n| a | b |\n|---|---|\n| 1 | 2 |\n\nlast",
    "Title\n=====\n\npara\n---\n\n> quote\nmore\n\n> again\n\n- a\n\n  cont\n- b\n\n    code\n\nend\n\n***\n\n1) x\n2) y\n\n",
    "a | b\n--|--\n1|2\n\ntext\n~~~\nfence\n~~~\n\n* [ ] task\n* [x] done\n\n<div>\nhtml\n</div>\n\nlazy\ncontinued\n",
]


def test_parser_turns_soft_breaks_into_line_breaks_only_outside_code():
    tokens = chat_parser().parse("a\nb\n\n```\nc\nd\n```\n")
    inline = [t for t in tokens if t.type == "inline"][0]
    assert [c.type for c in inline.children] == ["text", "hardbreak", "text"]
    assert [t.content for t in tokens if t.type == "fence"] == ["c\nd\n"]


def test_code_block_labels_name_language_and_first_line():
    blocks = code_blocks("```python\n\nimport os\nprint(os.sep)\n```\n```\n```")
    assert blocks[0].label == "python: import os (3 lines)"
    assert blocks[1].label == "(empty) (0 lines)"


@pytest.mark.parametrize("text", REPLIES)
def test_blocks_cover_the_text_in_order(text):
    blocks = split_blocks(text)
    assert "".join(b.source for b in blocks) == text
    # each block's tokens parse from its own source alone the same way
    for block in blocks:
        again = chat_parser().parse(block.source)
        assert [(t.type, t.content) for t in again] == [(t.type, t.content) for t in block.tokens]


def test_block_kinds():
    kinds = [b.tokens[0].type for b in split_blocks(REPLIES[0])]
    assert kinds == ["heading_open", "paragraph_open", "ordered_list_open", "fence", "table_open", "paragraph_open"]


@pytest.mark.parametrize("text", REPLIES)
def test_growing_document_matches_the_whole_parse_at_every_step(text):
    rng = random.Random(7)
    for _ in range(60):
        doc, at, final = GrowingDocument(), 0, []
        while at < len(text):
            n = rng.randint(1, 9)
            doc.append(text[at:at + n])
            at += n
            assert [b.source for b in doc.blocks] == [b.source for b in split_blocks(text[:at])]
            # a final block never changes again
            assert [b.source for b in doc.done[:len(final)]] == final
            final = [b.source for b in doc.done]


def test_a_list_is_not_final_while_its_next_item_may_be_arriving():
    doc = GrowingDocument("Steps:\n\n1. a\n2. b\n\n3")  # `3` may become `3. c`
    assert [b.source for b in doc.done] == ["Steps:\n\n"]
    doc.append(". c\n\nAfter.\n")
    assert [b.source for b in doc.blocks] == ["Steps:\n\n", "1. a\n2. b\n\n3. c\n\n", "After.\n"]
    assert len(doc.done) == 2  # the list is final once a paragraph started on a whole line after it


def test_a_paragraph_line_keeps_its_indentation_beyond_the_paragraphs_own():
    """Code written without a fence lost its indentation (CommonMark drops a paragraph line's
    leading whitespace; found hands-on with the coder model)."""
    def lines(text: str) -> list[list[str]]:
        inline = [t for t in chat_parser().parse(text) if t.type == "inline"]
        return [[c.content for c in t.children if c.type == "text"] for t in inline]

    assert lines("def add(a, b):\n    return a + b") == [["def add(a, b):", "    return a + b"]]
    assert lines("- item\n  cont\n      deeper") == [["item", "cont", "    deeper"]]  # the item's 2 go
    assert lines("> q1\n>    q2\n> q3") == [["q1", "   q2", "q3"]]  # the quote's `> ` goes
    assert lines("a\\\n  b  \n  c *d\n  e*") == [["a", "  b", "  c ", "d", "  e"]]  # after any line break
    assert lines("x\n\tx\n  \ty") == [["x", "    x", "    y"]]  # tabs to stops of 4
