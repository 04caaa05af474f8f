"""`ask`'s reply drawn live as Markdown on a terminal.

Blocks that later text can no longer change (`markdown.GrowingDocument`) are printed once, above
the live area, and stay in the terminal's scrollback as they are; only the blocks that may still
grow are redrawn, cut to their last lines when they are taller than the screen. rich's Live
redrawing the whole reply could not move the cursor above the top of the screen, so once a
reply outgrew it, every redraw left another copy of its beginning in the scrollback (found
hands-on: 44 copies of a class's first lines after one 60-line reply).

Each block is drawn alone, a blank line between blocks, as the app draws them (widgets/reply.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.segment import Segment

from qwenchat.markdown import Block, GrowingDocument
from qwenchat.markdown_draw import ChatMarkdown, drawable


class _Blocks:
    """Blocks drawn one by one, a blank line between them (and before the first when `after`:
    blocks were printed above); with `last` set, only the last that many lines."""

    def __init__(self, blocks: Iterable[Block], after: bool, last: int | None = None) -> None:
        self.blocks, self.after, self.last = list(blocks), after, last

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines: list[list[Segment]] = []
        for block in self.blocks:
            rows = console.render_lines(ChatMarkdown(block.tokens), options.update(height=None), pad=False)
            while rows and not Segment.get_line_length(rows[0]):
                del rows[0]  # Rich opens a list with a blank line; blocks are spaced here
            while rows and not Segment.get_line_length(rows[-1]):
                del rows[-1]
            if rows and (lines or self.after):
                lines.append([])
            lines += rows
        if self.last is not None:
            lines = lines[-self.last:] if self.last > 0 else []
        for row in lines:
            yield from row
            yield Segment.line()


class LiveReply:
    """`add` text as it comes and `draw` (at most a few times a second); `finish` prints all that
    is left (the end of the reply, or all that came before a Ctrl+C)."""

    def __init__(self, console: Console, refresh_per_second: float) -> None:
        self.console = console
        self.doc = GrowingDocument()
        self.printed = 0  # final blocks printed above the live area
        self.pending: list[str] = []  # text added since the last draw (parsed then, not per token)
        self.live = Live(console=console, refresh_per_second=refresh_per_second, transient=True)

    def __enter__(self) -> "LiveReply":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def add(self, text: str) -> None:
        self.pending.append(text)

    def draw(self) -> None:
        self._take()
        self._print(self.doc.done)
        room = max(self.console.size.height - 1, 1)  # never taller than the screen: no copies above it
        self.live.update(_Blocks(self.doc.tail, after=self.printed > 0, last=room))

    def finish(self, text: str | None = None) -> None:
        """`text`: the whole reply as the engine ended it, drawn instead of what was added if
        nothing is printed yet (`--no-stream` adds nothing)."""
        self._take()
        if text is not None and self.printed == 0:
            self.doc = GrowingDocument(drawable(text))
        self.live.update(_Blocks([], after=False))
        self._print(self.doc.blocks)

    def _take(self) -> None:
        if self.pending:
            self.doc.append(drawable("".join(self.pending)))
            self.pending.clear()

    def _print(self, blocks: list[Block]) -> None:
        new = blocks[self.printed:]
        if new:
            self.live.console.print(_Blocks(new, after=self.printed > 0))
            self.printed += len(new)
