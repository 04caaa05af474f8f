"""tui/screens/model_loading.py: the loading panel says what a load does besides loading. A first
`--quantize int4` (or int8) load converts the weights (~20 s) under a bare "Loading coder…" (found
hands-on); `qwenchat ask` said so already. Through the app's own session factory (`qwenchat chat`'s)
over a local model folder; only the engine is a fake (`startup.load_engine`, the seam where the
start-up path makes one), so `startup.conversion_note` decides as for a real start."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from qwenchat import startup
from qwenchat.cli.chat import make_session_factory
from qwenchat.config import Settings
from qwenchat.engine import prefetch
from qwenchat.paths import int8_cache_dir
from qwenchat.tui.app import QwenchatApp
from tests.fake_engine import FakeEngine
from tests.tui.conftest import wait_for
from tests.tui.helpers import SIZE, ready
from tests.tui.screen_text import screen_text

NOTE = "converting the weights to int4 (once: later starts reuse them)"


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)  # named ./tiny: a temporary folder's path wraps on the panel
    return folder


@pytest.fixture
def held_load(monkeypatch):
    """`load_engine` waits for the returned event, so the panel can be read mid-load; what it was
    given is kept in `seen`."""
    release, seen = threading.Event(), []

    def load(settings, progress=None, resolved=None):
        seen.append(resolved)
        release.wait(10)
        return FakeEngine(), "tiny"

    monkeypatch.setattr(startup, "load_engine", load)
    release.seen = seen  # type: ignore[attr-defined]
    return release


async def loading_panel(model_dir: Path, held_load, quantize: str) -> tuple[str, str]:
    """What the screen says while the model loads, and once it has."""
    app = QwenchatApp(make_session_factory(Settings(quantize=quantize)), model=f"./{model_dir.name}",
                      theme="qwenchat-dark", persist_theme=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: held_load.seen)
        await pilot.pause(0.1)  # the note, posted before the load began, is shown
        during = screen_text(app)
        held_load.set()
        await ready(pilot)
        return during, screen_text(app)


async def test_a_first_int4_load_says_on_the_panel_that_it_converts_the_weights(model_dir, held_load):
    assert startup.conversion_note(Settings(quantize="int4"), model_dir) == NOTE  # one source for the words
    during, after = await loading_panel(model_dir, held_load, "int4")
    assert f"Loading ./{model_dir.name}…" in during and NOTE in during
    assert held_load.seen[0].path == model_dir.resolve()  # found once: the load was handed it
    assert NOTE not in after and "Loading" not in after


async def test_no_note_when_the_converted_weights_are_kept_or_not_asked_for(model_dir, held_load):
    cache = prefetch.int8_cache_path(int8_cache_dir(), model_dir).with_name(prefetch.INT4_CACHE_FILE)
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\0" * 64)  # converted at an earlier start
    during, _ = await loading_panel(model_dir, held_load, "int4")
    assert f"Loading ./{model_dir.name}…" in during and "converting" not in during
    held_load.clear()
    held_load.seen.clear()
    during, _ = await loading_panel(model_dir, held_load, "none")
    assert f"Loading ./{model_dir.name}…" in during and "converting" not in during
