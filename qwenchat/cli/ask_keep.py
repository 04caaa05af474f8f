"""`ask`'s message when the server cannot be reached at all: saved in the history all the same.

A remote model is connected to (GET /models) before the message is read, so a refused
connection, an unknown host, a TLS failure or a refused key would otherwise lose the message,
piped input included (a pipe cannot be read twice). Here it is read as `ask` would read it (the
window is not known: stdin up to the input limit, marked where that cut it) and stored after
the conversation's head: a new conversation labelled with the server's URL, or the one `-c` /
`--cid` names. The error then says where it is. Once a reply has begun, the session saves
everything itself (the partial reply as interrupted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qwenchat.cli.ask_input import read_stdin
from qwenchat.errors import QwenchatError

if TYPE_CHECKING:
    from qwenchat.config import Settings
    from qwenchat.remote.errors import RemoteError
    from qwenchat.store import Store


def keep_unsent(err: "RemoteError", store: "Store | None", settings: "Settings", flags: dict[str, Any],
                system: str | None, cont: bool, cid: int | None, prompt: str | None,
                truncate: str | None) -> "RemoteError":
    """`err`, its hint saying where the message was saved (when it was: not with --no-save,
    nor when there was nothing to ask)."""
    if store is None:
        return err
    try:
        conv_id = _save(store, settings, flags, system, cont, cid, prompt, truncate)
    except QwenchatError:  # unreadable input, or no conversation to continue: the first error stands
        return err
    if conv_id is not None:
        err.hint = (f"{err.hint}; your message is saved in the history (conversation {conv_id}:"
                    f" qwenchat history show {conv_id})")
    return err


def _save(store: "Store", settings: "Settings", flags: dict[str, Any], system: str | None, cont: bool,
          cid: int | None, prompt: str | None, truncate: str | None) -> int | None:
    from qwenchat.fit import input_limit, unmeasured
    from qwenchat.remote.reference import RemoteRef
    from qwenchat.startup import choose_start, flag_overrides

    piped = read_stdin(input_limit(None, settings.max_input), keep_end=truncate == "head")
    if prompt is None and piped is None:
        return None
    text = unmeasured(prompt, piped).text
    conv = None
    if cont or cid is not None:
        conv = choose_start(store, flags.get("model"), cont, cid, need_one=True).conversation
    if conv is None:
        label = RemoteRef.parse(settings.model or "").label
        conv = store.create_conversation(label, system, settings=flag_overrides(flags))
    store.add_message(conv.id, "user", text, parent_id=conv.head_id)
    return conv.id
