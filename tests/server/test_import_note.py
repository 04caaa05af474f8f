"""`qwenchat serve -m FILE.gguf` converts the file once before loading it, which takes a minute:
the console says so in one line (the loading thread's progress), instead of staying silent."""

from __future__ import annotations

import io

from qwenchat.server.run import ImportNote


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_start(self, repo_id, files, total_bytes):
        self.calls.append(("start", repo_id, total_bytes))


def test_a_conversion_is_announced_once_with_its_size():
    out = io.StringIO()
    note = ImportNote(None, out)
    for done in (0, 1_000_000_000, 2_521_000_000):
        note.on_convert("model.gguf", done, 2_521_000_000)
    lines = out.getvalue().splitlines()
    assert lines == ["qwenchat serve: importing model.gguf: writing 2.5 GB of weights (once: later starts reuse them)…"]


def test_download_progress_goes_to_the_wrapped_progress():
    inner = Recorder()
    note = ImportNote(inner, io.StringIO())
    note.on_start("Qwen/x", [("a", 1)], 1)
    assert inner.calls == [("start", "Qwen/x", 1)]
    ImportNote(None, io.StringIO()).on_bytes("a", 1, 2, 1, 2)  # no progress given: nothing shown, no error
