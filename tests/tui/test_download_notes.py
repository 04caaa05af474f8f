"""What a download wants the user to know reaches the app as a notification (never stderr, which
would draw over the screen), from the loading worker's thread."""

from __future__ import annotations

from qwenchat.tui import messages as msg
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, make_app, notes


async def test_a_download_note_is_shown_as_written():
    seen: list[object] = []

    def factory(model, store, progress):
        seen.append(progress)
        progress.on_note("model.safetensors has no [checksum] to check it against")
        raise RuntimeError("no model here")

    app, _ = make_app()
    app.session_factory = factory
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: any("no [checksum]" in n for n in notes(app)))
        assert isinstance(seen[0], msg.DownloadReporter)
        assert "Download: model.safetensors has no [checksum] to check it against" in notes(app)
