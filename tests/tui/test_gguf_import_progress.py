"""Picking a .gguf file imports it with progress shown like a download's (issue 11: the model
picker's path field); the file's name is shown as written."""

from __future__ import annotations

from textual.widgets import ProgressBar

from qwenchat import models
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, make_app
from tests.tui.screen_text import screen_lines


def test_resolving_a_gguf_reports_the_conversion(monkeypatch, tmp_path):
    gguf = tmp_path / "my [model].gguf"
    gguf.write_bytes(b"GGUF")
    seen: list[tuple[str, int, int]] = []

    class Progress:
        def on_convert(self, name, done, total):
            seen.append((name, done, total))

    def fake_import(file, out, dtype=None, progress=None):
        for done in (0, 50, 100):
            progress(done, 100)
        out.mkdir(parents=True)
        return out

    import qwenchat.engine.gguf as gguf_module

    monkeypatch.setattr(gguf_module, "import_gguf", fake_import)
    monkeypatch.setattr(gguf_module, "import_is_current", lambda *a, **k: False)
    models.resolve_model(str(gguf), progress=Progress())
    assert seen == [("my [model].gguf", 0, 100), ("my [model].gguf", 50, 100), ("my [model].gguf", 100, 100)]


async def test_the_app_shows_an_import_like_a_download():
    app, _ = make_app()
    shown: list[tuple[str, float | None]] = []
    release = __import__("threading").Event()

    def factory(model, store, progress):
        progress.on_convert("odd [name].gguf", 0, 200)
        progress.on_convert("odd [name].gguf", 100, 200)
        release.wait(10)
        raise RuntimeError("stop here")

    app.session_factory = factory
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await wait_for(pilot, lambda: chat.query_one("#download", ProgressBar).progress == 100)
        await pilot.pause()
        label = next(line.strip(" ▕") for line in screen_lines(app) if "Importing" in line)
        shown.append((label, chat.query_one("#download", ProgressBar).total))
    release.set()  # the load ends (fails) after the app has closed
    assert shown == [("Importing odd [name].gguf…", 200)]
