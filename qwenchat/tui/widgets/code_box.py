"""The code blocks of a reply: highlighted with Textual's token styles in the theme's colours, on a
shaded box, each line's rows kept so a growing block costs its lexing and its new lines only.

A block still streaming is drawn again at every update of the reply (ten a second); Rich's
Syntax would wrap and render every line of it each time (~0.3 ms a line here), so lines come
from a cache keyed by their highlighted pieces and the width.

Lexing is whole-block when it matters (`exact`, a final block) but not at every update of a
growing one: 150 lines of Python take ~15 ms to lex. While a block grows (`exact` False), the
lines of its last whole lexing are kept but the last, and only the text from there on is lexed,
as if it started the block; every few updates the whole block is lexed again. A line's colours
can depend on lines above it (inside a docstring opened earlier), so new lines may be coloured
wrongly for a moment, never once the block is final.
"""

from __future__ import annotations

from functools import lru_cache

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import Token, _TokenType
from pygments.util import ClassNotFound
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

Piece = tuple[str, Style]
Line = tuple[Piece, ...]
PAD = 2  # columns of box on each side of the code, as Textual's Markdown draws fences
CACHED_ROWS = 4096  # lines kept (a few long replies' worth); the cache is emptied when full
RELEX_EVERY = 5  # updates of a growing block between two lexings of all of it


class CodeBox:
    """Draws code blocks for one theme: `box` is the shade behind them, `styles` the Rich style
    of each token type (`Token.Text` for the rest)."""

    def __init__(self, box: Style, styles: dict[_TokenType, Style]) -> None:
        self.box, self.styles = box, styles
        self.exact = True  # set by the caller: False while the block drawn next may still grow
        self._rows: dict[tuple[Line, int], list[list[Segment]]] = {}
        self._whole: tuple[str, str, list[Line]] | None = None  # (language, code, lines) last lexed whole
        self._since_whole = 0

    def __call__(self, code: str, language: str) -> "DrawnCode":
        return DrawnCode(self, self.lines(code, language))

    def lines(self, code: str, language: str) -> list[Line]:
        code = code.rstrip()
        whole = self._whole
        if (not self.exact and whole is not None and whole[0] == language and code.startswith(whole[1])
                and self._since_whole < RELEX_EVERY and len(whole[2]) > 1):
            kept = whole[2][:-1]  # the last line may go on
            start = sum(len(line) for line in whole[1].split("\n")[:len(kept)]) + len(kept)
            self._since_whole += 1
            return kept + self._lex(code[start:], language)
        lines = self._lex(code, language)
        self._whole, self._since_whole = (language, code, lines), 0
        return lines

    def _lex(self, code: str, language: str) -> list[Line]:
        lines: list[list[Piece]] = [[]]
        for token_type, value in _lexer(language).get_tokens(code):
            style = self._style(token_type)
            first, *rest = value.split("\n")
            if first:
                lines[-1].append((first, style))
            for part in rest:
                lines.append([(part, style)] if part else [])
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # the lexer's own final newline
        return [tuple(line) for line in lines]

    def rows(self, line: Line, width: int, console: Console) -> list[list[Segment]]:
        """One line of code as full-width rows of the box (more than one where it wraps)."""
        key = (line, width)
        if (cached := self._rows.get(key)) is not None:
            return cached
        inner = max(width - 2 * PAD, 1)
        if sum(cell_len(text) for text, _ in line) <= inner:
            parts = [[Segment(text, style) for text, style in line]]
        else:
            wrapped = Text.assemble(*line, end="").wrap(console, inner, overflow="fold")
            parts = [list(piece.render(console, end="")) for piece in wrapped]
        edge = Segment(" " * PAD, self.box)
        rows = [[edge, *row, Segment(" " * (inner - Segment.get_line_length(row)), self.box), edge] for row in parts]
        if len(self._rows) >= CACHED_ROWS:
            self._rows.clear()
        self._rows[key] = rows
        return rows

    def _style(self, token_type: _TokenType) -> Style:
        while token_type is not None:
            if (style := self.styles.get(token_type)) is not None:
                return style
            token_type = token_type.parent
        return self.styles[Token.Text]


class DrawnCode:
    """One code block as Rich draws it: a blank row of box, the code's rows, a blank row."""

    def __init__(self, box: CodeBox, lines: list[Line]) -> None:
        self.box, self.lines = box, lines

    def rows(self, width: int, console: Console) -> list[list[Segment]]:
        blank = [Segment(" " * width, self.box.box)]
        return [blank, *(row for line in self.lines for row in self.box.rows(line, width, console)), blank]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for row in self.rows(options.max_width, console):
            yield from row
            yield Segment.line()


def warm_up(languages: tuple[str, ...] = ("python", "json")) -> None:
    """Make the lexers of the languages replies most often hold: Pygments compiles a lexer's
    patterns when its first one is made (~30 ms for Python's here), which would otherwise stall the
    screen, and the engine beside it, at the first code block of a session."""
    for language in languages:
        _lexer(language)


@lru_cache(maxsize=32)
def _lexer(language: str) -> Lexer:
    """Made once per language (~1 ms each time otherwise); an unknown one reads as plain text.
    Tabs are expanded as Textual's highlighter expands them."""
    try:
        return get_lexer_by_name(language or "text", stripnl=False, ensurenl=True, tabsize=8)
    except ClassNotFound:
        return get_lexer_by_name("text", stripnl=False, ensurenl=True, tabsize=8)
