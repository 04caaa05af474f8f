"""How replies are read as Markdown in the app: the parser the message view renders with, and
the code blocks a user can copy.

Replies are parsed as GitHub-flavoured Markdown except that a single line break stays a line
break (a "soft break" becomes a hard one, as in chat apps and GitHub comments): a poem, an
address or a list written without markers keeps its lines. Code blocks are untouched (they are
never reflowed). Pure functions over markdown-it, which Textual already depends on; no widgets.
"""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore


def _soft_breaks_are_hard(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type, child.tag = "hardbreak", "br"


def chat_parser() -> MarkdownIt:
    """A parser for `textual.widgets.Markdown(parser_factory=chat_parser)`."""
    md = MarkdownIt("gfm-like")
    md.core.ruler.push("soft_breaks_are_hard", _soft_breaks_are_hard)
    return md


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
