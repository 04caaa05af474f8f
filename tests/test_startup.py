"""One rule for continuing a conversation: its own model unless -m is given, for the app's
-c/--cid and ask's -c/--cid alike."""

from __future__ import annotations

from typing import Any

import pytest

from qwenchat.errors import StoreError, UsageError
from qwenchat.startup import choose_start, flag_overrides
from qwenchat.store import Store


@pytest.fixture
def store(isolated_home):
    with Store.open() as s:
        yield s


def test_continue_uses_the_conversations_own_model(store):
    old = store.create_conversation("qwen2-0.5b-instruct")
    store.create_conversation("qwen2.5-0.5b-instruct")
    latest = store.create_conversation("my-imported-model")
    assert choose_start(store, None, True, None).model == "my-imported-model"
    assert choose_start(store, None, True, None).conversation_id == latest.id
    assert choose_start(store, None, False, old.id).model == "qwen2-0.5b-instruct"
    assert choose_start(store, "other", True, None).model == "other"  # -m wins
    fresh = choose_start(store, None, False, None)
    assert (fresh.model, fresh.conversation) == (None, None)


def test_continue_mistakes_are_clear(store):
    with pytest.raises(UsageError, match="both"):
        choose_start(store, None, True, 3)
    with pytest.raises(UsageError, match="no conversation to continue"):
        choose_start(store, None, True, None, need_one=True)
    assert choose_start(store, None, True, None).conversation is None  # the app opens a new chat
    with pytest.raises(StoreError, match="42"):
        choose_start(store, None, False, 42)


def test_only_the_options_given_on_the_command_line_override_a_conversation():
    assert flag_overrides({"temperature": 0.2, "max_tokens": 9, "top_k": None, "model": "x"}) == {
        "temperature": 0.2, "max_new_tokens": 9}


@pytest.mark.parametrize("argv", [["-c"], ["chat", "-c"], ["--cid", "{cid}"]])
def test_the_app_opens_a_continued_conversation_with_its_model(store, monkeypatch, argv):
    from typer.testing import CliRunner

    import qwenchat.tui as tui
    from qwenchat.cli import app

    conv = store.create_conversation("model-of-that-chat")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(tui, "run_app", lambda factory, **kw: seen.update(kw))
    result = CliRunner().invoke(app, [a.format(cid=conv.id) for a in argv])
    assert result.exit_code == 0, result.output
    assert seen["model"] == "model-of-that-chat" and seen["conversation_id"] == conv.id


def test_int8_cache_is_read_ahead_only_when_the_engine_will_likely_use_it(tiny_model, tmp_path, monkeypatch):
    import shutil

    from qwenchat import startup
    from qwenchat.config import Settings
    from qwenchat.engine import prefetch

    d = tmp_path / "m"
    from qwenchat.paths import int8_cache_dir

    shutil.copytree(tiny_model, d)
    monkeypatch.setattr(startup, "_gpu_likely", lambda: False)
    assert startup._read_ahead(Settings(quantize="int8"), d) is None  # no cache yet
    path = prefetch.int8_cache_path(int8_cache_dir(), d)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 64)

    def started(**settings) -> bool:
        ahead = startup._read_ahead(Settings(**settings), d)
        if ahead is not None:
            prefetch.discard(ahead)
        return ahead is not None

    assert started() and started(device="cpu") and started(quantize="int8", device="cuda")
    assert not started(quantize="none") and not started(dtype="bfloat16") and not started(device="cuda")
    assert not started(quantize="int4")  # int4 reads a cache file of its own: none yet
    monkeypatch.setattr(startup, "_gpu_likely", lambda: True)
    assert not started() and started(device="cpu") and started(quantize="int8")
    path.with_name(prefetch.INT4_CACHE_FILE).write_bytes(b"\0" * 64)
    ahead = startup._read_ahead(Settings(quantize="int4"), d)
    assert ahead is not None and ahead.path == path.with_name(prefetch.INT4_CACHE_FILE)
    prefetch.discard(ahead)


def test_a_first_int4_or_int8_load_says_it_converts_the_weights(tmp_path, monkeypatch):
    """The first `--quantize int4` run sat ~20 s under "loading model..." (found hands-on), and so
    did a first start with the defaults, int8 on a CPU (a new-user run)."""
    from qwenchat import startup
    from qwenchat.config import Settings
    from qwenchat.engine import prefetch
    from qwenchat.paths import int8_cache_dir

    d = tmp_path / "m"
    d.mkdir()
    assert startup.conversion_note(Settings(quantize="int4"), d) == \
        "converting the weights to int4 (once: later starts reuse them)"
    assert "int8" in startup.conversion_note(Settings(quantize="int8"), d)
    monkeypatch.setattr(startup, "_gpu_likely", lambda: False)
    assert startup.conversion_note(Settings(), d) == "converting the weights to int8 (once: later starts reuse them)"
    assert startup.conversion_note(Settings(dtype="bfloat16"), d) is None  # auto keeps float weights then
    assert startup.conversion_note(Settings(device="cuda"), d) is None
    assert startup.conversion_note(Settings(quantize="none"), d) is None
    path = prefetch.int8_cache_path(int8_cache_dir(), d).with_name(prefetch.INT4_CACHE_FILE)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\0" * 64)
    assert startup.conversion_note(Settings(quantize="int4"), d) is None  # converted before
    assert startup.conversion_note(Settings(quantize="int8"), d) is not None  # int8 mode's file is another


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_load_engine_reads_the_int8_cache_ahead_and_the_engine_takes_it(tiny_model, tmp_path, monkeypatch, mode):
    """Every front end (ask and the TUI) gets the read-ahead: load_engine starts it, the engine's
    checkpoint reader claims it, and nothing is left pending afterwards (int4 mode: its own file)."""
    import shutil

    from qwenchat import startup
    from qwenchat.config import Settings
    from qwenchat.engine import prefetch
    from qwenchat.engine.chat import ChatEngine
    from qwenchat.models import ResolvedModel
    from qwenchat.paths import int8_cache_dir

    d = tmp_path / "m"

    shutil.copytree(tiny_model, d)
    ChatEngine.load(d, device="cpu", quantize=mode, int8_cache_dir=int8_cache_dir())  # writes the mode's cache
    started, claimed = [], []
    real_start, real_claim = prefetch.start, prefetch.claim
    monkeypatch.setattr(prefetch, "start", lambda p: started.append(p) or real_start(p))
    monkeypatch.setattr(prefetch, "claim", lambda p: claimed.append(real_claim(p)) or claimed[-1])
    monkeypatch.setattr(startup, "_gpu_likely", lambda: False)
    resolved = ResolvedModel(path=d, name="m", repo_id=None, revision=None, source="local")
    engine, _ = startup.load_engine(Settings(quantize=mode), resolved=resolved)
    path = prefetch.int8_cache_path(int8_cache_dir(), d)
    assert started == [path if mode == "int8" else path.with_name(prefetch.INT4_CACHE_FILE)]
    assert any(c is not None for c in claimed) and not prefetch._pending
    assert engine.info.quantize == mode and "; read from the weight cache" in engine.info.placement_reason


def test_load_engine_leaves_the_imports_out_of_full_collections_once(tiny_model, tmp_path):
    """A full garbage collection in the loaded app visited ~230k objects (140-180 ms on the UI
    thread, about every 15 s of a streaming reply). The first load freezes what the imports made;
    a second load (a model switched to) freezes nothing more, and the first model is freed."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import gc, weakref
        from pathlib import Path
        from qwenchat import startup
        from qwenchat.config import Settings
        from qwenchat.models import ResolvedModel

        assert gc.get_freeze_count() == 0
        resolved = ResolvedModel(path=Path({str(tiny_model)!r}), name="m", repo_id=None, revision=None, source="local")
        engine, _ = startup.load_engine(Settings(device="cpu"), resolved=resolved)
        frozen = gc.get_freeze_count()
        assert frozen > 50_000, frozen  # torch's modules, functions and classes
        gone = weakref.ref(engine.model)
        del engine
        gc.collect()
        assert gone() is None  # the model is no frozen object
        engine, _ = startup.load_engine(Settings(device="cpu"), resolved=resolved)
        assert gc.get_freeze_count() == frozen
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "QWENCHAT_HOME": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
