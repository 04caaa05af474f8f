"""How replies are read as Markdown: the parser every face renders with, a reply's top-level
blocks as it grows (or the one block of a reply that is code as a whole: JSON output), and the
code blocks a user can copy.

Replies are parsed as GitHub-flavoured Markdown except that a single line break stays a line
break (a "soft break" becomes a hard one, as in chat apps and GitHub comments) and a line of a
paragraph keeps its leading whitespace beyond the paragraph's own indentation (CommonMark drops
it): a poem, an address, a list written without markers or code written without a fence keeps
its lines and their indentation (tabs: to stops of 4 columns, as CommonMark counts them). Code
blocks are untouched (they are never reflowed). Pure functions over markdown-it (which Rich and
Textual already depend on); drawing is `markdown_draw.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.parser_inline import RuleFuncInlineType
from markdown_it.rules_core import StateCore
from markdown_it.rules_inline import StateInline, escape, newline
from markdown_it.token import Token


def _soft_breaks_are_hard(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type, child.tag = "hardbreak", "br"


def _keeping_indent(rule: RuleFuncInlineType) -> RuleFuncInlineType:
    """`rule`, one that reads a line break (markdown-it's `newline`, or `escape` for a backslash
    one), but the next line's leading whitespace, which it skips, is kept as text. The block
    parser has taken the paragraph's own indentation off by then (a list item's, a block
    quote's `> `), so what is left is the line's as written; done once per line at parse time."""

    def keeping(state: StateInline, silent: bool) -> bool:
        start = state.pos
        if not rule(state, silent):
            return False
        read = state.src[start:state.pos]
        if not silent and "\n" in read:
            # plain spaces, not no-break ones: Rich keeps a line's leading spaces, and a line copied
            # from the screen pastes as written (Python would refuse U+00A0)
            state.pending += read.rpartition("\n")[2].expandtabs(4)
        return True

    return keeping


def chat_parser() -> MarkdownIt:
    md = MarkdownIt("gfm-like")
    md.core.ruler.push("soft_breaks_are_hard", _soft_breaks_are_hard)
    md.inline.ruler.at("newline", _keeping_indent(newline))
    md.inline.ruler.at("escape", _keeping_indent(escape))
    return md


@dataclass(frozen=True)
class Block:
    """One top-level block (a paragraph, a list, a fenced code block, a table...): its source
    and the parser's tokens for it."""

    source: str
    tokens: tuple[Token, ...]


def split_blocks(text: str, parser: MarkdownIt | None = None) -> list[Block]:
    """The top-level blocks of `text`, in order; a block's source runs from its first line up to
    the next block's (blank lines between them belong to the earlier one)."""
    tokens = (parser or chat_parser()).parse(text)
    groups: list[list[Token]] = []
    for token in tokens:
        if token.level == 0 and token.nesting >= 0:
            groups.append([])  # an opening tag or a self-contained block (fence, hr) starts one
        if groups:
            groups[-1].append(token)
    lines = text.splitlines(keepends=True)
    starts = [g[0].map[0] if g[0].map else 0 for g in groups] + [len(lines)]
    return [Block("".join(lines[starts[i]:starts[i + 1]]), tuple(g)) for i, g in enumerate(groups)]


class GrowingDocument:
    """A reply's blocks while it streams: every block but the last is final (later text cannot
    change it), so only the last is parsed again when text arrives. The blocks are the same as
    `split_blocks` of the whole text would give."""

    def __init__(self, text: str = "") -> None:
        self._parser = chat_parser()
        self.text = ""
        self.done: list[Block] = []  # final blocks
        self.tail: list[Block] = []  # the blocks that may still change
        self.append(text)

    @property
    def blocks(self) -> list[Block]:
        return self.done + self.tail

    def append(self, text: str) -> int:
        """Add `text`; returns how many blocks became final.

        Only whole lines decide: a partial last line may yet continue an earlier block (`2` of
        `2. next item`), and a new line can change only the block before it (a list goes on, a
        paragraph becomes a setext heading or a table), so a block is final once a block after
        it has started on a complete line."""
        self.text += text
        start = len(self.text) - sum(len(b.source) for b in self.tail) - len(text)
        blocks = split_blocks(self.text[start:], self._parser)
        whole_lines = self.text.rfind("\n") + 1 - start
        begins, offset = [], 0
        for b in blocks:
            begins.append(offset)
            offset += len(b.source)
        started = sum(1 for at in begins if at < whole_lines)
        final = blocks[:max(started - 1, 0)]
        self.done.extend(final)
        self.tail = blocks[len(final):]
        return len(final)


class CodeDocument:
    """A reply that is code as a whole, never read as Markdown (a JSON reply, written under an
    output constraint: Markdown would drop its indentation): one code block of all its text, in
    `language`. The same face as `GrowingDocument`; its one block stays open while text comes."""

    def __init__(self, language: str, text: str = "") -> None:
        self.language = language
        self.text = ""
        self.done: list[Block] = []  # never any: the block is the whole reply
        self.tail: list[Block] = []
        self.append(text)

    @property
    def blocks(self) -> list[Block]:
        return self.tail

    def append(self, text: str) -> int:
        """Add `text`; no block ever becomes final (returns 0)."""
        self.text += text
        fence = Token("fence", "code", 0, info=self.language, content=self.text, markup="```",
                      map=[0, self.text.count("\n") + 1], block=True)
        self.tail = [Block(self.text, (fence,))] if self.text.strip() else []
        return 0


@dataclass(frozen=True)
class CodeBlock:
    info: str  # the fence's info string: usually the language ("python"), "" for none
    code: str

    @property
    def label(self) -> str:
        """One line naming the block for a picker: its language and first non-blank line."""
        first = next((line.strip() for line in self.code.splitlines() if line.strip()), "(empty)")
        lines = len(self.code.splitlines())
        head = f"{self.info.split()[0]}: " if self.info.strip() else ""
        return f"{head}{first[:60]}{'…' if len(first) > 60 else ''} ({lines} line{'s' if lines != 1 else ''})"


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced or indented code block of `text` in order (an unclosed fence, as in a reply
    still streaming, runs to the end)."""
    tokens = MarkdownIt("gfm-like").parse(text)
    return [CodeBlock(t.info.strip(), t.content.rstrip("\n"))
            for t in tokens if t.type in ("fence", "code_block")]
