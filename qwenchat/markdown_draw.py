"""How a reply's Markdown is drawn: one Rich renderable for both faces (`ask` on a terminal and the
chat app), so a reply looks the same in each.

`ChatMarkdown` is Rich's Markdown over our parser (`markdown.py`: a single line break stays a
line break) with every heading left-aligned (a chat column is no title page) and numbered items
written `1.`, and it can be
given tokens already parsed (the app draws a reply block by block as it streams) and a function
that draws code blocks (the app highlights them in its theme's colours; `ask` keeps Rich's
Syntax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from markdown_it.token import Token
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markdown import CodeBlock, Heading, ListItem, Markdown
from rich.segment import Segment

from qwenchat.markdown import chat_parser

DrawCode = Callable[[str, str], RenderableType]  # (code, language or "") -> what to show

# C0 controls but tab and newline, DEL and C1: a reply drawn on a terminal must not carry escape
# sequences to it (a model can write ESC [2J as well as any text); Rich strips only a few.
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)])


def drawable(text: str) -> str:
    """`text` without the control characters a terminal would act on."""
    return text.translate(_CONTROLS)


class _LeftHeading(Heading):
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = self.text.copy()
        text.justify = "left"
        yield text


def code_language(token: Token) -> str:
    """The language a code block's token names: its info string's first word ("" for none)."""
    return (token.info or "").partition(" ")[0]


class _Code(CodeBlock):
    draw: DrawCode | None = None

    @classmethod
    def create(cls, markdown: Markdown, token: Token) -> CodeBlock:
        block = super().create(markdown, token)
        block.draw = getattr(markdown, "draw_code", None)
        block.language = code_language(token)
        return block

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.draw is None:
            yield from super().__rich_console__(console, options)
        else:
            yield self.draw(str(self.text).rstrip(), self.language)


class _ListItem(ListItem):
    def render_number(self, console: Console, options: ConsoleOptions, number: int,
                      last_number: int) -> RenderResult:
        """`1.` as the reply wrote it (Rich writes `1`)."""
        width = len(str(last_number)) + 3  # " 12. "
        lines = console.render_lines(self.elements, options.update(width=options.max_width - width), style=self.style)
        style = console.get_style("markdown.item.number", default="none")
        for i, line in enumerate(lines):
            yield Segment(" " * width if i else f"{number}.".rjust(width - 1) + " ", style)
            yield from line
            yield Segment.line()


class ChatMarkdown(Markdown):
    """`markup` is the reply's text, or tokens `chat_parser()` made of it."""

    elements = {**Markdown.elements, "heading_open": _LeftHeading, "fence": _Code, "code_block": _Code,
                "list_item_open": _ListItem}

    def __init__(self, markup: str | Sequence[Token] = "", *, draw_code: DrawCode | None = None,
                 code_theme: str = "monokai", hyperlinks: bool = True) -> None:
        # Rich's __init__ builds a parser and parses: ~1.5 ms, at every update of a streaming
        # reply. Its attributes are copied from one made once instead.
        self.__dict__.update(_rich_defaults())
        self.parsed = chat_parser().parse(drawable(markup)) if isinstance(markup, str) else list(markup)
        self.markup = markup if isinstance(markup, str) else ""
        self.code_theme = self.inline_code_theme = code_theme
        self.hyperlinks, self.draw_code = hyperlinks, draw_code


@lru_cache(maxsize=1)
def _rich_defaults() -> dict:
    return dict(vars(Markdown("")))
