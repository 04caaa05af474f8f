"""The int8 weight cache is believed only when it is intact and was built from these very weight
files; it lives under qwenchat's cache (never in the model folder) and is written atomically."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwenchat.engine import int8_cache, prefetch
from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.checkpoint import Int8Checkpoint
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.model_build import matrix_keys
from qwenchat.engine.prefetch import int8_cache_path
from qwenchat.engine.quantize import QTensor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def model(tiny_models, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_models["untied"], tmp_path / "m"))


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "cache" / "int8"


def _load(d: Path, root: Path) -> tuple[Int8Checkpoint, dict]:
    cfg = Qwen2Config.from_file(d / "config.json")
    ck = Int8Checkpoint(d, cfg, matrix_keys(cfg), root)
    return ck, dict(ck)


def _same(a: dict, b: dict) -> bool:
    def eq(x, y) -> bool:
        if isinstance(x, QTensor):
            return torch.equal(x.q, y.q) and torch.equal(x.scale, y.scale)
        return torch.equal(x, y)

    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


def _tensor_span(path: Path, key: str) -> tuple[int, int]:
    """The byte range of one tensor's data in a safetensors file."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    begin, end = json.loads(data[8 : 8 + n])[key]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def _flip(path: Path, at: int, n: int = 64) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(n)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in old))


def test_damaged_bytes_mid_file_are_rebuilt_and_reported_not_served(model, root):
    _, fresh = _load(model, root)
    path = int8_cache_path(root, model)
    size = path.stat().st_size
    _flip(path, size // 2)  # same size, same header: only a checksum can tell
    ck, got = _load(model, root)
    assert ck.source.startswith("quantized, cache rebuilt (damaged") and "does not match its checksum" in ck.source
    assert str(path) in ck.note and "rebuilt" in ck.note
    assert _same(got, fresh)  # the model got the right weights, not the damaged ones
    again, got = _load(model, root)
    assert again.source == "cache" and again.note == "" and _same(got, fresh)


def test_damage_read_through_the_prefetch_is_caught_too(model, root):
    _, fresh = _load(model, root)
    path = int8_cache_path(root, model)
    begin, end = _tensor_span(path, "model.layers.1.mlp.down_proj.weight:q")
    _flip(path, (begin + end) // 2, 8)
    ahead = prefetch.start(path)
    assert ahead is not None
    ck, got = _load(model, root)
    assert "rebuilt" in ck.note and "down_proj" in ck.note and _same(got, fresh)


def test_the_engine_shows_the_rebuild_as_a_note(model, root):
    ChatEngine.load(model, device="cpu", quantize="int8", int8_cache_dir=root)
    _flip(int8_cache_path(root, model), int8_cache_path(root, model).stat().st_size - 100)
    engine = ChatEngine.load(model, device="cpu", quantize="int8", int8_cache_dir=root)
    (note,) = engine.info.notes
    assert "int8 weight cache" in note and "damaged" in note
    assert ChatEngine.load(model, device="cpu", quantize="int8", int8_cache_dir=root).info.notes == ()


def test_a_replaced_model_with_the_same_size_and_mtime_is_not_served_from_the_old_cache(model, root):
    _, old = _load(model, root)
    weights = model / "model.safetensors"
    st = weights.stat()
    begin, end = _tensor_span(weights, "model.layers.0.mlp.down_proj.weight")
    _flip(weights, begin, end - begin)  # other weights, same size
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    ck, new = _load(model, root)
    assert ck.source == "quantized, cache rebuilt (the model's weight files changed)"
    assert not torch.equal(new["model.layers.0.mlp.down_proj.weight"].q, old["model.layers.0.mlp.down_proj.weight"].q)


def test_an_untouched_model_is_checked_without_hashing_it(model, root, monkeypatch):
    """The weight files are hashed when the cache is built; later loads compare their stat with
    the one remembered. A chmod changes the stat, not the bytes: hashed once more, still served."""
    monkeypatch.setattr(int8_cache, "RACY_NS", 0)  # the tiny model was written a moment ago
    hashed = []
    real = int8_cache.file_sha256
    monkeypatch.setattr(int8_cache, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    _load(model, root)
    assert hashed == ["model.safetensors"]
    hashed.clear()
    assert _load(model, root)[0].source == "cache" and hashed == []
    (model / "model.safetensors").chmod(0o600)
    assert _load(model, root)[0].source == "cache" and hashed == ["model.safetensors"]
    hashed.clear()
    assert _load(model, root)[0].source == "cache" and hashed == []


def test_a_file_changed_just_before_its_stat_is_hashed_again(model, root, monkeypatch):
    """The clock behind ctime is coarse: a file written in the same tick as its stat was taken
    could change again with an identical stat, so such a stat is not trusted alone."""
    hashed = []
    real = int8_cache.file_sha256
    monkeypatch.setattr(int8_cache, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    _load(model, root)  # the copy was written milliseconds ago
    hashed.clear()
    assert _load(model, root)[0].source == "cache" and hashed == ["model.safetensors"]


def test_the_cache_lives_under_the_cache_root_and_a_hub_snapshot_stays_clean(tiny_models, tmp_path):
    """A Hub snapshot holds links to blobs; `hf cache verify` reports any other file in it."""
    repo = tmp_path / "hub" / "models--Org--Tiny"
    snap, blobs = repo / "snapshots" / "0123456789abcdef", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in sorted(tiny_models["untied"].iterdir()):
        shutil.copy(f, blobs / f.name)
        (snap / f.name).symlink_to(Path("../../blobs") / f.name)
    legacy = snap / ".qwenchat" / "int8.safetensors"  # where older versions put it
    legacy.parent.mkdir()
    legacy.write_bytes(b"old cache")
    before = sorted(p.name for p in snap.iterdir() if p.name != ".qwenchat")
    root = tmp_path / "cache"
    engine = ChatEngine.load(snap, device="cpu", quantize="int8", int8_cache_dir=root)
    assert "cache written" in engine.info.placement_reason
    assert sorted(p.name for p in snap.iterdir()) == before and sorted(p.name for p in blobs.iterdir()) == before
    path = int8_cache_path(root, snap)
    assert path.is_file() and path.parent.parent == root and path.parent.name.startswith("Org--Tiny-01234567-")
    assert int8_cache_path(root, snap) != int8_cache_path(root, tiny_models["untied"])


def test_the_cache_is_flushed_to_disk_before_it_is_renamed_into_place(model, root, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(int8_cache.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(int8_cache.os, "replace", lambda a, b: events.append(Path(b).name) or real_replace(a, b))
    _load(model, root)
    i = events.index("int8.safetensors")
    assert events[i - 1] == "fsync" and events[i + 1] == "fsync"  # the file, then the folder
    assert sorted(p.name for p in int8_cache_path(root, model).parent.iterdir()) == ["int8.safetensors", "source.json"]


KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from qwenchat.engine import int8_cache
from qwenchat.engine.checkpoint import Int8Checkpoint
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.model_build import matrix_keys

real_put = int8_cache.CacheWriter.put
def put(self, key, t):
    real_put(self, key, t)
    print("writing", flush=True)
    time.sleep(60)
int8_cache.CacheWriter.put = put
d, root = Path(sys.argv[1]), Path(sys.argv[2])
cfg = Qwen2Config.from_file(d / "config.json")
dict(Int8Checkpoint(d, cfg, matrix_keys(cfg), root))
"""


def test_a_kill_mid_write_leaves_nothing_that_is_served_or_kept(model, root):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(model), str(root)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    folder = int8_cache_path(root, model).parent
    (tmp,) = folder.iterdir()
    assert tmp.name == f".int8.safetensors.{proc.pid}.tmp"  # recognisable, never read
    ck, _ = _load(model, root)
    assert ck.source == "quantized, cache written"  # not served from the half-written file
    assert sorted(p.name for p in folder.iterdir()) == ["int8.safetensors", "source.json"]  # the stale one is gone


def test_temporary_files_of_dead_processes_are_removed_even_when_the_cache_is_served(model, root):
    _load(model, root)
    folder = int8_cache_path(root, model).parent
    dead = folder / ".int8.safetensors.999999999.tmp"  # no such process: pids stop far below
    live = folder / f".int8.safetensors.{os.getppid()}.tmp"  # another process still writing
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    assert _load(model, root)[0].source == "cache"
    assert not dead.exists() and live.exists()
