"""Which conversation a face continues, and with which model and settings: one rule for the
chat app (`qwenchat -c`, `--cid`) and `qwenchat ask` (`-c`, `--cid`).

A continued conversation runs on its own model unless `-m` names another, and with its own
saved settings, over which only the options given on this command line win (not the config
file's: those are the defaults of chats that saved none). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qwenchat.errors import UsageError

if TYPE_CHECKING:
    from qwenchat.store import Store
    from qwenchat.store.records import Conversation


@dataclass(frozen=True)
class Start:
    conversation: "Conversation | None"  # the conversation to continue, if any
    model: str | None  # the model to load; None: the configured default

    @property
    def conversation_id(self) -> int | None:
        return self.conversation.id if self.conversation is not None else None


def choose_start(store: "Store", model_flag: str | None, cont: bool, cid: int | None,
                 *, need_one: bool = False) -> Start:
    """The conversation `-c` (the latest) or `--cid` names, and the model to run it on.
    need_one: `-c` with no conversation stored yet is a usage error (for `ask`); the app opens
    a new chat instead."""
    if cont and cid is not None:
        raise UsageError("--continue and --cid both given", "use one of them")
    conv = None
    if cid is not None:
        conv = store.get_conversation(cid)  # StoreError naming the id if there is none
    elif cont:
        conv = store.latest_conversation()
        if conv is None and need_one:
            raise UsageError("there is no conversation to continue yet", 'start one: qwenchat ask "..."')
    return Start(conv, model_flag or (conv.model if conv is not None else None))


def flag_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The generation options given on this command line (settings keys -> option names)."""
    names = {"max_tokens": "max_new_tokens"}
    fields = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_tokens", "seed")
    return {names.get(k, k): flags[k] for k in fields if flags.get(k) is not None}
