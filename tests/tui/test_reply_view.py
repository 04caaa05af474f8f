"""tui/widgets/reply.py and code_box.py: a reply drawn block by block. Streamed in any pieces it
ends line for line as drawn at once; an update repaints only the lines that changed; while it
streams its height grows in steps; the theme's colours reach the code."""

from __future__ import annotations

import random

from pygments.token import Token
from rich.console import Console
from rich.style import Style
from textual.app import App, ComposeResult

from qwenchat.tui.widgets.code_box import CodeBox
from qwenchat.tui.widgets.reply import ReplyView

REPLY = ("## Reading a CSV\n\nHere is a function:\nit keeps *your* line breaks.\n\n```python\nimport csv\n\n\n"
         "def rows(path):\n    \"\"\"Every row.\"\"\"\n    with open(path) as f:\n        return list(csv.DictReader(f))\n"
         "```\n\n1. `csv.DictReader` reads the header.\n2. Each row is a dict.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
         "> Note: large files want a generator.\n\nThat is all.")


class ReplyApp(App[None]):
    def __init__(self, text: str = "", streaming: bool = False, language: str | None = None) -> None:
        super().__init__()
        self.text, self.streaming, self.language = text, streaming, language

    def compose(self) -> ComposeResult:
        yield ReplyView(self.text, streaming=self.streaming, language=self.language)


def texts(view: ReplyView) -> list[str]:
    return [line.text for line in view._lines]


def segments(view: ReplyView) -> list[list[tuple]]:
    """Each line's pieces: text and style."""
    return [[(seg.text, seg.style) for seg in line] for line in view._lines]


async def drawn_at_once(text: str, size=(70, 40), language: str | None = None, read=texts) -> list:
    app = ReplyApp(text, language=language)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        return read(app.query_one(ReplyView))


async def test_streamed_in_any_pieces_it_ends_as_drawn_at_once():
    whole = await drawn_at_once(REPLY)
    assert any("def rows(path):" in line for line in whole) and any(" 1. " in line for line in whole)
    assert "Here is a function:" in whole[2] and "it keeps your line breaks." in whole[3]
    for seed in (1, 2):
        rng = random.Random(seed)
        app = ReplyApp(streaming=True)
        async with app.run_test(size=(70, 40)) as pilot:
            view = app.query_one(ReplyView)
            at = 0
            while at < len(REPLY):
                n = rng.randint(1, 12)
                view.append(REPLY[at:at + n])
                at += n
                if rng.random() < 0.3:
                    await pilot.pause()
            view.streaming = False
            await pilot.pause()
            assert view.source == REPLY
            assert texts(view) == whole


async def test_code_written_without_a_fence_keeps_its_indentation_streamed_or_not():
    """The coder model's reply 'def add_numbers(a, b):\n    return a + b' was shown with its second
    line at the first's column: wrong Python."""
    text = "Here:\n\ndef add_numbers(a, b):\n    total = a + b\n\treturn total\n\n- item\n  - nested"
    whole = await drawn_at_once(text)
    code = [line.rstrip() for line in whole[2:5]]
    assert code == ["def add_numbers(a, b):", "    total = a + b", "    return total"]
    app = ReplyApp(streaming=True)
    async with app.run_test(size=(70, 40)) as pilot:
        view = app.query_one(ReplyView)
        for ch in text:  # a piece may end inside a line's indentation
            view.append(ch)
            await pilot.pause()
        view.streaming = False
        await pilot.pause()
        assert texts(view) == whole


async def test_an_update_repaints_only_the_lines_that_changed():
    app = ReplyApp("First paragraph, long enough to be a line of its own.\n\nSecond", streaming=True)
    async with app.run_test(size=(70, 40)) as pilot:
        await pilot.pause()
        view = app.query_one(ReplyView)
        before = list(view._lines)
        painted = []
        view.refresh = lambda *regions, **kw: painted.append((regions, kw))  # type: ignore[method-assign]
        view.append(" words")
        assert view._lines[0] is before[0]  # the first block is not drawn again
        assert view._lines[-1].text.startswith("Second words")
        (regions, kw), = painted
        assert not kw.get("layout") and [(r.y, r.height) for r in regions] == [(len(before) - 1, 1)]


async def test_while_streaming_the_height_grows_in_steps_then_fits():
    app = ReplyApp("one", streaming=True)
    async with app.run_test(size=(70, 36)) as pilot:  # a step of 36 // 6 = 6 lines
        await pilot.pause()
        view = app.query_one(ReplyView)
        assert view.size.height == 6
        view.append("\ntwo\nthree")
        await pilot.pause()
        assert len(view._lines) == 3 and view.size.height == 6  # room left: no layout was needed
        view.append("\nfour\nfive\nsix")
        await pilot.pause()
        assert view.size.height == 12  # at least one free line below the text
        view.streaming = False
        await pilot.pause()
        assert view.size.height == 6


async def test_code_takes_the_themes_colours():
    def code_style(view: ReplyView) -> Style:
        line = next(s for s in view._lines if "import csv" in s.text)
        return next(seg.style for seg in line if seg.text.strip() == "import")

    app = ReplyApp(REPLY)
    async with app.run_test(size=(70, 40)) as pilot:
        app.theme = "textual-dark"
        await pilot.pause()
        view = app.query_one(ReplyView)
        dark = code_style(view)
        app.theme = "textual-light"
        await pilot.pause()
        light = code_style(view)
        assert dark.bgcolor != light.bgcolor and dark.color != light.color


def test_code_box_wraps_long_lines_inside_the_box_and_keeps_rows():
    box = CodeBox(Style(bgcolor="black"), {Token.Text: Style(color="white", bgcolor="black")})
    console = Console(width=30)
    lines = box.lines("short = 1\n" + "x" * 50, "python")
    assert len(lines) == 2
    rows = box.rows(lines[1], 30, console)
    assert len(rows) == 2  # 50 columns of code in 26 inside the box
    assert all(sum(len(seg.text) for seg in row) == 30 for row in rows)
    assert box.rows(lines[1], 30, console) is rows  # the same line again is not drawn again


async def test_a_reply_cannot_send_escape_sequences_to_the_terminal():
    """A model can write ESC [2J (clear the screen) as well as any text; Rich lets ESC through."""
    text = "para \x1b[31mred\x07 bell\r\n\n```\ncode \x1b[2Jclear\x9b\tend\n```"
    shown = await drawn_at_once(text)
    assert not any(ch in line for line in shown for ch in "\x1b\x07\r\x9b")
    assert shown[0].startswith("para [31mred bell") and any("code [2Jclear" in line for line in shown)


async def test_a_mouse_selection_is_shown_and_copied():
    from textual.geometry import Offset
    from textual.selection import Selection

    app = ReplyApp("first line\nsecond line\n\n```\ncode here\n```")
    async with app.run_test(size=(40, 20)) as pilot:
        await pilot.pause()
        view = app.query_one(ReplyView)
        selection = Selection.from_offsets(Offset(6, 0), Offset(6, 1))  # "line" to "second"
        assert view.get_selection(selection) == ("line\nsecond", "\n")
        app.screen.selections = {view: selection}
        await pilot.pause()
        selected = app.screen.get_component_rich_style("screen--selection")
        first = view.render_line(0)
        styled = [(seg.text, seg.style) for seg in first if seg.text.strip()]
        assert ("line", styled[-1][1]) == styled[-1] and styled[-1][1].bgcolor == selected.bgcolor
        assert styled[0][0] == "first " and styled[0][1].bgcolor != selected.bgcolor
        assert app.screen.get_selected_text() == "line\nsecond"


async def test_a_click_on_a_link_opens_it():
    app = ReplyApp("See [the docs](https://example.com/docs) for more.")
    async with app.run_test(size=(60, 10)) as pilot:
        await pilot.pause()
        opened = []
        app.open_url = lambda url, **kw: opened.append(url)  # type: ignore[method-assign]
        view = app.query_one(ReplyView)
        column = view._lines[0].text.index("the docs")
        await pilot.click(ReplyView, offset=(column + 2, 0))
        assert opened == ["https://example.com/docs"]
        await pilot.click(ReplyView, offset=(1, 0))  # plain text: nothing opens
        assert opened == ["https://example.com/docs"]


async def test_a_growing_code_block_is_not_lexed_whole_at_every_update_but_ends_exact():
    code = "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(30)) + 'DOC = """\ninside\na docstring\n"""\nend = 1'
    text = "Code:\n\n```python\n" + code + "\n```\n\nDone."
    whole = await drawn_at_once(text, size=(70, 90))
    app = ReplyApp(streaming=True)
    async with app.run_test(size=(70, 90)) as pilot:
        view = app.query_one(ReplyView)
        lexed: list[int] = []
        original = CodeBox._lex
        CodeBox._lex = lambda box, c, lang: (lexed.append(len(c)), original(box, c, lang))[1]  # type: ignore[method-assign]
        try:
            head = text.index("```python\n") + 10
            view.append(text[:head])
            for at in range(head, len(text), 11):
                view.append(text[at:at + 11])
                if at % 3 == 0:
                    await pilot.pause()
            view.streaming = False
            await pilot.pause()
        finally:
            CodeBox._lex = original  # type: ignore[method-assign]
        assert texts(view) == whole
        styles = [[seg.style for seg in line] for line in view._lines]
        fresh = ReplyApp(text)
        async with fresh.run_test(size=(70, 90)) as pilot2:
            await pilot2.pause()
            assert styles == [[seg.style for seg in line] for line in fresh.query_one(ReplyView)._lines]
        long = [n for n in lexed if n > len(code) // 2]
        assert len(long) < len(lexed) / 3  # most updates lexed only the block's last lines


JSON_REPLY = '{\n  "fruits": [\n    "apple",\n    "banana"\n  ],\n  "note": "# not a *heading*"\n}'


async def test_a_json_reply_is_one_code_block_that_keeps_its_indentation():
    """Drawn as Markdown a JSON reply lost its indentation (found hands-on with JSON output on)."""
    shown = await drawn_at_once(JSON_REPLY, language="json")
    code = [line[2:].rstrip() for line in shown[1:-1]]  # inside the box: a blank row above and below
    assert code == JSON_REPLY.split("\n") and not shown[0].strip() and not shown[-1].strip()
    as_markdown = await drawn_at_once(JSON_REPLY)
    # what it was (its indentation is kept as Markdown now, but not its asterisks)
    assert '  "note": "# not a *heading*"' not in [line.rstrip() for line in as_markdown]


async def test_a_json_reply_streams_cheaply_and_ends_as_drawn_at_once():
    whole = await drawn_at_once(JSON_REPLY, language="json")
    app = ReplyApp(streaming=True, language="json")
    async with app.run_test(size=(70, 40)) as pilot:
        view = app.query_one(ReplyView)
        last = JSON_REPLY.index("heading")
        for at in range(0, last, 5):
            view.append(JSON_REPLY[at:min(at + 5, last)])
            await pilot.pause()
        before = list(view._lines)
        painted = []
        view.refresh = lambda *regions, **kw: painted.append((regions, kw))  # type: ignore[method-assign]
        view.append("head")  # the last line grows: only its row is drawn and painted again
        assert all(new is old for new, old in zip(view._lines[:-2], before[:-2]))
        (regions, kw), = painted
        assert not kw.get("layout") and [(r.y, r.height) for r in regions] == [(len(before) - 2, 1)]
        del view.refresh
        view.append(JSON_REPLY[last + 4:])
        view.streaming = False
        await pilot.pause()
        assert texts(view) == whole and view.source == JSON_REPLY


async def test_a_json_reply_is_highlighted_as_json():
    app = ReplyApp(JSON_REPLY, language="json")
    async with app.run_test(size=(70, 40)) as pilot:
        await pilot.pause()
        line = next(s for s in app.query_one(ReplyView)._lines if "apple" in s.text)
        styles = {seg.text.strip(): seg.style for seg in line if seg.text.strip()}
        assert styles['"apple"'].color != styles[","].color  # a string is not punctuation


async def test_a_reply_continued_under_another_output_setting_is_drawn_anew():
    app = ReplyApp(JSON_REPLY, streaming=True)
    async with app.run_test(size=(70, 40)) as pilot:
        await pilot.pause()
        view = app.query_one(ReplyView)
        view.language = "json"  # F5 with JSON output turned on since: shown as it will be stored
        view.streaming = False
        await pilot.pause()
        assert texts(view) == await drawn_at_once(JSON_REPLY, language="json")


async def test_a_code_block_drawn_directly_is_line_for_line_as_rich_draws_it():
    """A block that is one code block skips Rich's Markdown (its cost at every update of a growing
    block); the lines must not change for it."""
    import qwenchat.tui.widgets.reply as reply

    wide = "x = " + " + ".join(str(i) for i in range(60))
    texts_ = ["```python\ndef f(a):\n\treturn a  # tab\n\n\n```", f"```\n{wide}\n```", "```rust extra words\nfn main() {}\n",
              "    indented(code)\n    more", "```\n```", "```nosuchlanguage\n  a\n b\n```"]
    for text in texts_:
        direct = await drawn_at_once(f"Intro.\n\n{text}\n\nOutro.", size=(50, 40), read=segments)
        real = reply._code_of
        reply._code_of = lambda block: None  # type: ignore[assignment]
        try:
            through_rich = await drawn_at_once(f"Intro.\n\n{text}\n\nOutro.", size=(50, 40), read=segments)
        finally:
            reply._code_of = real
        assert direct == through_rich, text
