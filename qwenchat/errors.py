"""Errors a user can act on, raised by the layers outside the engine (store, hub, config).

Each carries a message that names the problem and a hint that names the fix. The CLI and the
TUI show them as they are; anything else reaching the top is a bug.
The engine has its own base (`qwenchat.engine.errors.EngineError`) of the same shape, because
the engine imports nothing from the rest of qwenchat.
"""

from __future__ import annotations


class QwenchatError(Exception):
    """Something the user can fix: `message` says what is wrong, `hint` how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(QwenchatError):
    """The command line itself is wrong (exit status 2)."""

    exit_code = 2


class ConfigError(QwenchatError):
    """The config file or an environment variable holds an invalid value."""


class ValueRefused(ConfigError):
    """A setting's name or value that its check refuses, wherever it came from (`config set` turns
    it into a usage error: it was typed on the command line)."""


class StoreError(QwenchatError):
    """The history database cannot be opened, read or written."""


class ConversationChanged(StoreError):
    """Another process added to a conversation between this one's reading it and writing to it:
    nothing was written (the caller reads it again and decides)."""

    def __init__(self, conversation_id: int) -> None:
        super().__init__(
            f"another window added to conversation {conversation_id} just now; this message was not stored",
            "send it again once that window's reply has ended",
        )
        self.conversation_id = conversation_id


class HubError(QwenchatError):
    """A model cannot be found, downloaded or verified."""


class InputTooLongError(QwenchatError):
    """The input cannot fit the context window (or passes the input limit) as it is."""


def in_chain(err: BaseException | None, kinds: type | tuple[type, ...]) -> BaseException | None:
    """`err` or the first exception in its cause/context chain that is one of `kinds`."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kinds):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
