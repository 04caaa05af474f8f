"""Fitting `ask`'s message into the context window: measure cheaply, then refuse or cut.

The message is an instruction (the PROMPT argument) and material (piped stdin), joined by
`join_message`. Only the material is ever cut, never the instruction; a cut ends on a line or
word boundary and leaves a visible marker (`[... N tokens cut ...]`) in the stored text.

Costs are bounded: the material is tokenized once on its own, the template is rendered once
for the overhead (system prompt plus instruction, without the material) and once to check a
result near the edge; never in a loop over the whole conversation. The history does not count
against the material: when the message is long, the engine leaves out the oldest turns (and
says so), so the room the message may take is the window less the system prompt and the reply.

A model on a server gives counts but no token ids to decode a cut from, so a cut there works on
characters in proportion to the count (then measured again). Its counts may be estimates
(`ModelInfo.exact_tokens` False: the server cannot tokenize for us); then every count said is
"about" and `ESTIMATE_SLACK` of the window is kept free. A server that does not report its
window gets the message whole (the server refuses what it cannot hold).

This sits beside `session` and knows the engine's measuring verbs, but no terminal or store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qwenchat.errors import InputTooLongError

if TYPE_CHECKING:
    from qwenchat.session import ChatSession

CUTS = ("head", "tail")  # head: drop the material's beginning; tail: drop its end
BYTES_PER_TOKEN = 16  # a generous upper bound for text (English ~4, code ~3-5 bytes a token)
MARGIN = 8  # tokens: the join and the cut edge can tokenize a little differently in place
_BOUNDARY_SHARE = 4  # look for a clean boundary within the last (first) quarter of the kept text
UNKNOWN_WINDOW = 131072  # tokens: the longest Qwen2 window, to size the read when a server does not say
ESTIMATE_SLACK = 0.1  # share of the window left free when token counts are estimates


@dataclass(frozen=True)
class Piped:
    """Stdin as read: `skipped` bytes were dropped unread from its front (to keep its end), or
    `unread` says reading stopped at the limit with more possibly to come."""

    text: str
    skipped: int = 0
    unread: bool = False
    limit: int = 0


@dataclass(frozen=True)
class Fitted:
    text: str  # the message to send
    cut_tokens: int = 0  # tokens of the material read but left out
    marker: str = ""  # the note left in the text where it was cut ("": nothing was cut)


def join_message(instruction: str | None, material: str | None) -> str:
    """The user message: the instruction, a blank line, then the piped material."""
    if instruction is None:
        return material or ""
    if material is None:
        return instruction
    return f"{instruction}\n\n{material}"


def input_limit(session: "ChatSession | None", configured: int | None) -> int:
    """Most bytes of stdin to read: the configured limit, else sized from the context window
    (the longest there is when it is not known: a server that does not say, or none yet)."""
    window = session.model_info.context_window if session is not None else 0
    return configured or BYTES_PER_TOKEN * (window or UNKNOWN_WINDOW)


def fit_message(session: "ChatSession", instruction: str | None, piped: Piped | None, cut: str | None) -> Fitted:
    """The message to send, with the material cut to fit when `cut` is "head" or "tail";
    InputTooLongError when it cannot fit (or `cut` is None and it does not)."""
    material = piped.text if piped is not None else None
    if piped is not None and (piped.unread or piped.skipped) and cut is None:
        raise InputTooLongError(
            f"stdin is larger than the input limit of {piped.limit} bytes",
            "keep part of it with --truncate head or --truncate tail, or raise --max-input (config key max_input)",
        )
    info = session.model_info
    if session.raw:
        return Fitted(join_message(instruction, material))
    if not info.context_window:  # a server that does not say: it refuses what it cannot hold
        return unmeasured(instruction, piped)
    engine = session.engine
    window = _usable(info.context_window, info.exact_tokens)
    reserve = _reserve(session, info.context_window)
    head = [m for m in session.messages[:1] if m["role"] == "system"]
    overhead = len(engine.encode_chat(head + [_user(join_message(instruction, "" if material is not None else None))]))
    ids = engine.tokenizer.encode_plain(material) if material else []
    estimate = overhead + len(ids) + reserve
    whole = join_message(instruction, material)
    if not (piped is not None and (piped.skipped or piped.unread)):
        if estimate <= window - MARGIN:
            return Fitted(whole)  # fits with room to spare: no render needed
        if estimate <= window + MARGIN and _excess(session, head, whole, reserve, window) <= 0:
            return Fitted(whole)
    if cut is None or not ids:
        what = "the message" if ids else "the prompt"
        hint = ("cut the piped input with --truncate head or --truncate tail, shorten it, lower --max-tokens,"
                f" or {_longer(info)}" if ids else
                f"pipe the long part on stdin (--truncate can cut that), lower --max-tokens, or {_longer(info)}")
        raise InputTooLongError(
            f"{what} needs about {overhead + len(ids)} tokens{_estimated(info)} (plus {reserve} for the reply),"
            f" but the context window holds {info.context_window}",
            hint,
        )
    return _cut(session, head, instruction, piped, ids, cut, window - reserve - overhead, reserve)


def _cut(session, head, instruction, piped: Piped, ids: list[int], cut: str, room: int, reserve: int) -> Fitted:
    engine = session.engine
    info = session.model_info
    window = _usable(info.context_window, info.exact_tokens)
    approx = not info.exact_tokens
    marker_tokens = len(engine.tokenizer.encode_plain(marker(len(ids), piped, approx))) + 2
    keep = room - marker_tokens - MARGIN
    for _ in range(3):  # once, as a rule; again only if the kept text tokenizes longer in place
        if keep <= 0:
            raise InputTooLongError(
                f"the instruction and the system prompt leave no room for the piped input"
                f" in a context window of {info.context_window}",
                f"shorten the instruction, lower --max-tokens, or {_longer(info)}",
            )
        kept = clean_edge(_keep(engine, piped.text, ids, keep, cut), cut)
        dropped = max(0, len(ids) - len(engine.tokenizer.encode_plain(kept)))
        mark = marker(dropped, piped, approx)
        marked = f"{mark}\n{kept}" if cut == "head" else f"{kept.removesuffix(chr(10))}\n{mark}"
        text = join_message(instruction, marked)
        over = _excess(session, head, text, reserve, window)
        if over <= 0:
            return Fitted(text, dropped, mark)
        keep -= over + MARGIN
    raise InputTooLongError(f"could not cut the piped input to fit a context window of {info.context_window}",
                            f"shorten it, or {_longer(info)}")


def marker(tokens: int, piped: Piped | None, approx: bool = False) -> str:
    """The visible note left where material was cut ("about" N tokens when N is an estimate)."""
    n = f"about {tokens}" if approx else str(tokens)
    if piped is not None and piped.skipped:
        return f"[... {piped.skipped} bytes and {n} tokens cut ...]"
    if piped is not None and piped.unread:
        return f"[... {n} tokens cut, and stdin was not read past {piped.limit} bytes ...]"
    return f"[... {n} tokens cut ...]"


def _keep(engine, material: str, ids: list[int], keep: int, cut: str) -> str:
    """The first (tail cut) or last (head cut) `keep` tokens of `material`: decoded from its ids
    when they are the model's, else the same share of its characters (a server's counts, exact
    or estimated, come with placeholder ids, and it has no tokenizer here to decode with)."""
    decode = getattr(engine.tokenizer, "decode", None)
    if decode is not None:
        kept_ids = ids[-keep:] if cut == "head" else ids[:keep]
        return decode(kept_ids, skip_special_tokens=False)
    chars = len(material) * keep // max(1, len(ids))
    return material[len(material) - chars:] if cut == "head" else material[:chars]


def unmeasured(instruction: str | None, piped: Piped | None) -> Fitted:
    """The message when the window is not known: whole, marked where stdin was cut by bytes
    (at its front when its end was kept)."""
    material = piped.text if piped is not None else None
    if piped is None or not (piped.skipped or piped.unread):
        return Fitted(join_message(instruction, material))
    mark = (f"[... {piped.skipped} bytes cut ...]" if piped.skipped
            else f"[... stdin was not read past {piped.limit} bytes ...]")
    marked = f"{mark}\n{material}" if piped.skipped else f"{material.removesuffix(chr(10))}\n{mark}"
    return Fitted(join_message(instruction, marked), 0, mark)


def _usable(window: int, exact: bool) -> int:
    """The window to fit into: all of it when counts are exact, less a slack for estimates."""
    return window if exact else window - int(window * ESTIMATE_SLACK)


def _reserve(session: "ChatSession", window: int) -> int:
    """Room kept for the reply: the local engine's own rule; for a server, the reply's token
    limit when one is set, a quarter of the window at most (as the local engine keeps)."""
    engine = session.engine
    limit = engine.settings(session.options)
    if hasattr(engine, "reply_reserve"):
        return engine.reply_reserve(limit)
    return max(1, min(limit or window, window // 4))


def _longer(info) -> str:
    return "raise --context-limit" if info.server is None else "use a model with a longer context window"


def _estimated(info) -> str:
    return " (estimated: the server's tokenizer may count differently)" if not info.exact_tokens else ""


def clean_edge(text: str, cut: str) -> str:
    """`text` with its cut edge moved to a line (else word) boundary nearby, so the kept
    material neither starts nor ends mid-word; a partial character at the edge is dropped."""
    if cut == "tail":
        text = text.rstrip("\ufffd")
        floor = len(text) - len(text) // _BOUNDARY_SHARE
        for sep in ("\n", " "):
            i = text.rfind(sep)
            if i >= floor:
                return text[: i + 1] if sep == "\n" else text[:i]
        return text
    text = text.lstrip("\ufffd")
    ceiling = len(text) // _BOUNDARY_SHARE
    for sep in ("\n", " "):
        i = text.find(sep)
        if 0 <= i <= ceiling:
            return text[i + 1 :]
    return text


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _excess(session, head, text: str, reserve: int, window: int) -> int:
    """How many tokens system prompt + message + reply exceed the window by (one render)."""
    return len(session.engine.encode_chat(head + [_user(text)])) + reserve - window
