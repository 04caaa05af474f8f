"""Messages that carry work done in threads (model loading, downloads, generation) back to the
UI thread. `post_message` is thread-safe, so workers post these and never touch widgets."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class SessionReady(Message):
    """A load finished; `seq` tells which one (a later pick supersedes an earlier load)."""

    def __init__(self, session: Any, model: str | None, seq: int = 0) -> None:
        super().__init__()
        self.session, self.model, self.seq = session, model, seq


class SessionFailed(Message):
    def __init__(self, error: BaseException, model: str | None, seq: int = 0) -> None:
        super().__init__()
        self.error, self.model, self.seq = error, model, seq


class DownloadStarted(Message):
    def __init__(self, repo_id: str, total_bytes: int, verb: str = "Downloading") -> None:
        super().__init__()
        self.repo_id, self.total_bytes, self.verb = repo_id, total_bytes, verb


class DownloadAdvanced(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class DownloadFinished(Message):
    pass


class DownloadNote(Message):
    """Something the download wants the user to know (a file that could not be checked, a
    damaged one fetched again)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class LoadingNote(Message):
    """What the load does besides finding the model, for the loading panel (converting the weights
    to int4 first: `startup.conversion_note`)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class TurnStored(Message):
    """The turn's message is stored and its reply begins: a new chat exists from here."""


class ReplyDone(Message):
    """A reply ended (complete, cut by length, or stopped): `turn` is the session's `Turn`."""

    def __init__(self, turn: Any) -> None:
        super().__init__()
        self.turn = turn


class ReplyFailed(Message):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class DownloadReporter:
    """A `qwenchat.hub.DownloadProgress` that forwards to the app (called from the worker)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def on_start(self, repo_id: str, files: Any, total_bytes: int) -> None:
        self.target.post_message(DownloadStarted(repo_id, total_bytes))

    def on_bytes(self, filename: str, file_done: int, file_total: int, done: int, total: int) -> None:
        self.target.post_message(DownloadAdvanced(done, total))

    def on_finish(self) -> None:
        self.target.post_message(DownloadFinished())

    def on_convert(self, name: str, done: int, total: int) -> None:
        """A .gguf file being imported: shown like a download."""
        if done == 0:
            self.target.post_message(DownloadStarted(name, total, verb="Importing"))
        self.target.post_message(DownloadAdvanced(done, total))
        if done >= total:
            self.target.post_message(DownloadFinished())

    def on_note(self, text: str) -> None:
        self.target.post_message(DownloadNote(text))  # never to stderr: it would draw over the app

    def on_loading(self, text: str) -> None:
        """What the load is doing, said by the app's session factory once the model is found."""
        self.target.post_message(LoadingNote(text))
