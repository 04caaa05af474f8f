"""An assistant reply drawn as Markdown, cheap enough to grow ten times a second beside the engine.

On two cores the UI thread's every millisecond is taken from a decode step (BENCHMARKS.md, issue
15), and Textual's Markdown widget costs ~50 ms of CPU per update of a streaming reply (a widget
per block, mounted and styled, then a layout and repaint of the chat). This widget is one
widget: the reply's top-level blocks (`markdown.GrowingDocument`) are drawn with Rich
(`markdown_draw.ChatMarkdown`) into lines that are kept; when text arrives only the blocks that
may still change are drawn again, and only the lines that changed are repainted.

A layout (and, with the chat following the reply, a repaint of the whole chat, every line of it
having moved) is the dearest part of an update, so while the reply streams it grows into room
kept below it: its height rises in steps of a few lines (a sixth of the screen), and the chat
moves up a step at a time instead of a line at every update. The room goes when it ends.

Every block is drawn alone, so a reply drawn at once from history looks line for line as it did
when it streamed.

A reply written under a JSON output constraint is not Markdown (its indentation would go): given
a `language` it is drawn as one code block of all its text (`markdown.CodeDocument`), which grows
as a fenced block of a Markdown reply grows, at the same cost.

Colours come from the app's theme: the Markdown styles below are Textual style strings over the
theme's variables, and code is highlighted with Textual's highlighter's token styles on a shaded
background (`code_box.py`), as Textual's Markdown widget draws it.
"""

from __future__ import annotations

from pygments.token import Token
from rich.segment import Segment
from rich.style import Style as RichStyle
from rich.theme import Theme as RichTheme
from textual import events
from textual.color import Color
from textual.geometry import Region
from textual.highlight import HighlightTheme
from textual.selection import Selection
from textual.strip import Strip
from textual.style import Style
from textual.widget import Widget

from qwenchat.markdown import Block, CodeDocument, GrowingDocument, split_blocks
from qwenchat.markdown_draw import ChatMarkdown, code_language, drawable
from qwenchat.tui.widgets import code_box
from qwenchat.tui.widgets.code_box import CodeBox

# Rich's Markdown style names -> Textual style strings (unlisted names draw in the text's own style).
MARKDOWN_STYLES = {
    "markdown.h1": "bold underline $text-primary",
    "markdown.h2": "bold $text-primary",
    "markdown.h3": "bold $text-secondary",
    "markdown.h4": "bold $text-secondary",
    "markdown.h5": "italic $text-secondary",
    "markdown.h6": "italic $text-secondary",
    "markdown.em": "italic",
    "markdown.emph": "italic",
    "markdown.strong": "bold",
    "markdown.s": "strike",
    "markdown.kbd": "bold",
    "markdown.link": "underline $text-accent",
    "markdown.link_url": "underline $text-accent",
    "markdown.block_quote": "italic $text-secondary",
    "markdown.item.bullet": "bold $text-primary",
    "markdown.item.number": "bold $text-primary",
    "markdown.hr": "$text-muted",
    "markdown.table.header": "bold $text-primary",
    "markdown.table.border": "$text-muted",
}
INLINE_CODE = {True: "$text-warning on $warning 10%", False: "$text-error on $error 5%"}  # by theme.dark
CODE_BACKGROUND = {True: Color(0, 0, 0, 0.1), False: Color(255, 255, 255, 0.3)}  # over the reply's own
RICH_MARKDOWN_NAMES = ("markdown.paragraph", "markdown.text", "markdown.code_block", "markdown.list",
                       "markdown.item", "markdown.h1.border", "markdown.h7")


def _highlight(line: Strip, start: int, end: int, style: RichStyle) -> Strip:
    """`line` with characters start..end (end -1: to the end) in the selection's style."""
    end = len(line.text) if end == -1 else end
    out, at = [], 0
    for text, own, _ in line:
        a, b = max(start - at, 0), min(end - at, len(text))
        if a >= b:
            out.append(Segment(text, own))
        else:
            out += [Segment(text[:a], own), Segment(text[a:b], own + style if own else style), Segment(text[b:], own)]
        at += len(text)
    return Strip([seg for seg in out if seg.text], line.cell_length)


# Read once by `warm_up`: a link (the link finder's patterns), a table, a list and a fence.
_WARM_UP_TEXT = "See https://example.com, **b** and `c`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- x\n\n```python\npass\n```\n"


def warm_up() -> None:
    """Pay before the first reply streams what its first updates would pay on the UI thread:
    the Markdown parser's first parse (its link finder compiles its patterns, ~20 ms here) and the
    common lexers (`code_box.warm_up`). Measured in the first reply of the app: one ~50-80 ms
    update, a stall of the screen and of the engine's decode step beside it."""
    split_blocks(_WARM_UP_TEXT)
    code_box.warm_up()


def _code_of(block: Block) -> tuple[str, str] | None:
    """(code, language) of a block that is one code block, drawn straight from its `CodeBox` rows:
    the same lines as through Rich's Markdown, which costs ~1 ms more an update of a growing
    block (most of a coder model's replies)."""
    if len(block.tokens) != 1 or block.tokens[0].type not in ("fence", "code_block"):
        return None
    token = block.tokens[0]
    return token.content.rstrip(), code_language(token)  # what `markdown_draw._Code` hands its drawer


def _document(text: str, language: str | None) -> GrowingDocument | CodeDocument:
    return GrowingDocument(text) if language is None else CodeDocument(language, text)


class ReplyView(Widget):
    DEFAULT_CSS = "ReplyView { height: auto; }"

    def __init__(self, text: str = "", *, streaming: bool = False, language: str | None = None, **kwargs) -> None:
        """`language`: the reply is code as a whole, in that language ("json"); None: Markdown."""
        super().__init__(**kwargs)
        self._streaming = streaming
        self._doc = _document(drawable(text), language)
        self._key: tuple | None = None  # (width, theme) the blocks below were drawn for
        self._drawn: list[tuple[str, list[Strip], bool]] = []  # each block's source, lines, and if final
        self._lines: list[Strip] = []  # all of them, a blank line between blocks
        self._stale = True  # text came since `_lines` was made
        self._look: tuple[RichTheme, CodeBox] | None = None  # see `_theme`

    @property
    def source(self) -> str:
        """The text drawn: the reply's, less the control characters a terminal would act on."""
        return self._doc.text

    @property
    def language(self) -> str | None:
        return getattr(self._doc, "language", None)

    @language.setter
    def language(self, value: str | None) -> None:
        if value != self.language:  # a reply continued under another output setting
            self._doc, self._drawn, self._stale = _document(self._doc.text, value), [], True
            self.refresh(layout=True)

    @property
    def streaming(self) -> bool:
        return self._streaming

    @streaming.setter
    def streaming(self, value: bool) -> None:
        if value != self._streaming:
            self._streaming, self._stale = value, True  # its last block is final now: drawn exactly
            self.refresh(layout=True)  # the room below it comes or goes

    def append(self, text: str) -> None:
        before = self._lines
        self._doc.append(drawable(text))
        self._stale = True
        if self._key is None:
            self.refresh(layout=True)
            return
        self._draw(self._key[0])
        if self.size.height != self._height(len(self._lines)):
            self.refresh(layout=True)
            return
        changed = [y for y, (old, new) in enumerate(zip(before, self._lines)) if old is not new]
        changed += range(min(len(before), len(self._lines)), max(len(before), len(self._lines)))
        if changed:  # the rest of the reply is not painted again
            self.refresh(Region(0, min(changed), self._key[0], max(changed) - min(changed) + 1))

    def _height(self, lines: int) -> int:
        if not self._streaming:
            return lines
        step = max(2, self.screen.size.height // 6)
        return -(-(lines + 1) // step) * step  # at least one free line

    # Textual's hooks
    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001 - Textual's
        self._draw(width)
        return self._height(len(self._lines))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        self._draw(width)
        if y >= len(self._lines):
            return Strip.blank(width, self._base().rich_style)
        line = self._lines[y]
        if (selection := self.text_selection) is not None and (span := selection.get_span(y)) is not None:
            line = _highlight(line, *span, self.screen.get_component_rich_style("screen--selection"))
        return line.apply_offsets(0, y)  # where the mouse is, for Textual's text selection

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The text a mouse selection covers (Textual copies it)."""
        return selection.extract("\n".join(line.text.rstrip() for line in self._lines)), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        """A link opens in the browser, as in Textual's Markdown (terminals that know OSC 8
        links also open them on Ctrl/Cmd+click, the way they open any)."""
        link = event.style.link if event.style else None
        if link:
            event.stop()
            self.app.open_url(link)

    def notify_style_update(self) -> None:
        self._key, self._look = None, None  # a new theme or background: drawn again in its colours
        super().notify_style_update()

    # drawing
    def _draw(self, width: int) -> None:
        key = (width, self.app.theme)
        if key == self._key and not self._stale:
            return  # Textual asks once per line
        if key != self._key:
            self._key, self._drawn, self._look = key, [], None
        self._stale = False
        blocks = self._doc.blocks if width > 0 else []
        final = len(self._doc.done) if self._streaming else len(blocks)  # the rest may still grow
        del self._drawn[len(blocks):]
        for i, block in enumerate(blocks):
            if i < len(self._drawn) and self._drawn[i][0] == block.source and (self._drawn[i][2] or i >= final):
                continue  # drawn as it is (a block drawn while it grew is drawn again once final)
            was = self._drawn[i][1] if i < len(self._drawn) else []
            self._code_box().exact = i < final
            self._drawn[i:i + 1] = [(block.source, self._draw_block(block, width, was), i < final)]
        blank = Strip.blank(width, self._base().rich_style)
        lines: list[Strip] = []
        for _, block_lines, _ in self._drawn:
            if lines:
                lines.append(blank)
            lines.extend(block_lines)
        self._lines = lines

    def _draw_block(self, block: Block, width: int, was: list[Strip]) -> list[Strip]:
        """`was`: the block's lines as last drawn; those that come out the same are kept (a
        Strip is dear to make, and a line kept is not repainted)."""
        theme = self._theme()
        console = self.app.console
        base = self._base().rich_style
        if (code := _code_of(block)) is not None:
            rows = self._code_box()(*code).rows(width, console)  # its styles hold `base` already
        else:
            options = console.options.update(width=width, height=None, highlight=False)
            with console.use_theme(theme, inherit=True):
                rows = console.render_lines(ChatMarkdown(block.tokens, draw_code=self._code_box()), options,
                                            style=base, pad=False)
        while rows and not Segment.get_line_length(rows[0]):
            del rows[0]  # Rich opens a list with a blank line; blocks are spaced here
        lines = []
        for i, row in enumerate(rows):
            if (short := width - Segment.get_line_length(row)) > 0:
                row = [*row, Segment(" " * short, base)]
            lines.append(was[i] if i < len(was) and list(was[i]) == row else Strip(row, width))
        return lines

    def _base(self) -> Style:
        return self.get_visual_style()

    def _theme(self) -> RichTheme:
        """The Rich theme for the Markdown styles."""
        if self._look is None:
            base = self._base()
            variables = self.app.theme_variables
            dark = self.app.current_theme.dark

            def rich(spec: str, under: Style = base) -> RichStyle:
                return (under + Style.parse(spec, variables)).rich_style

            styles = {name: rich(spec) for name, spec in MARKDOWN_STYLES.items()}
            styles["markdown.code"] = rich(INLINE_CODE[dark])
            styles.update({name: base.rich_style for name in RICH_MARKDOWN_NAMES})
            box = base + Style(background=CODE_BACKGROUND[dark])
            code = {token: rich(spec, box) for token, spec in HighlightTheme.STYLES.items()}
            code[Token.Text] = rich("$text", box)
            self._look = (RichTheme(styles, inherit=True), CodeBox(box.rich_style, code))
        return self._look[0]

    def _code_box(self) -> CodeBox:
        self._theme()
        return self._look[1]
