"""Reading the tensors of a safetensors file into private memory on a background thread.

A cold `qwenchat ask` spends over a second importing torch and parsing the tokenizer before the
engine reads its int8 cache (600+ MB for 0.5B parameters). That read is mostly page faults and
copies done by the kernel with the GIL released, so it can run meanwhile on another core:
`start(path)` begins it, and the engine's reader `claim`s it for the same file and `take`s each
tensor's bytes as it gets there (waiting if the read is not that far yet). Whatever the prefetch
cannot hand over (it failed, the file changed, a range it does not hold) the reader reads itself,
so a prefetch never changes what is loaded, only when the bytes are copied.

The buffers are anonymous private memory, like the reader's own, never a mapping of the file:
a changed file cannot change a loaded model. Each buffer is handed over once and forgotten, so
memory the model frees (parts copied into fused matrices) is not kept alive here. The thread also
computes each buffer's CRC-32 (zlib releases the GIL), so the reader can check the cache's
checksums without spending its own time on them.

Where the int8 cache of a model lives is decided here too (`int8_cache_path`), so the read-ahead
and the engine agree on it without torch.

Torch-free on purpose: the point is to start before torch is imported.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import threading
import zlib
from pathlib import Path

from qwenchat.engine import hugepages

CACHE_FILE = "int8.safetensors"  # in <cache root>/<model key>/, see int8_cache_path
INT4_CACHE_FILE = "int4.safetensors"  # int4 mode's cache, beside it (int8_cache.py's INT4_FORMAT)
BATCH_BYTES = 32 << 20  # per read call: the consumer can start on the first tensors while the rest is read
MAX_IOVECS = 512  # below every platform's IOV_MAX (1024 on Linux)

_pending: dict[str, "Prefetch"] = {}
_pending_lock = threading.Lock()


def int8_cache_path(cache_root: Path, model_dir: Path) -> Path:
    """The int8 cache of `model_dir`: in a folder of its own under `cache_root` (qwenchat's
    cache, never the model folder: a Hub snapshot must hold only the Hub's files), named after
    the model and a hash of its resolved path, so two models never share one."""
    real = os.path.realpath(model_dir)
    return Path(cache_root) / f"{_model_label(Path(real))}-{hashlib.sha256(real.encode()).hexdigest()[:16]}" / CACHE_FILE


def _model_label(real: Path) -> str:
    """A readable name: `Org--Name-<revision>` for a Hub snapshot
    (.../models--Org--Name/snapshots/<revision>), else the folder's name."""
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        label = f"{real.parent.parent.name[len('models--'):]}-{real.name[:8]}"
    else:
        label = real.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:80] or "model"


def start(path: Path) -> "Prefetch | None":
    """Begin reading `path` in the background; None where that is not possible (no such file,
    no preadv on this platform). A later `claim` of the same path gets it."""
    if not hasattr(os, "preadv"):
        return None
    try:
        prefetch = Prefetch(Path(path))
    except OSError:
        return None
    with _pending_lock:
        old = _pending.pop(prefetch.key, None)
        _pending[prefetch.key] = prefetch
    if old is not None:
        old.close()
    return prefetch


def claim(path: Path) -> "Prefetch | None":
    """The prefetch started for `path`, now the caller's to use and close; None if there is none."""
    with _pending_lock:
        return _pending.pop(os.path.realpath(path), None)


def discard(prefetch: "Prefetch") -> None:
    """Drop a prefetch nobody claimed (or that its claimer is done with): frees its memory."""
    with _pending_lock:
        if _pending.get(prefetch.key) is prefetch:
            del _pending[prefetch.key]
    prefetch.close()


class Prefetch:
    """One file being read: every tensor's bytes into its own buffer, in file order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = os.path.realpath(path)
        self._fd = os.open(path, os.O_RDONLY)
        self.stat = os.fstat(self._fd)
        self._cond = threading.Condition()
        self._buffers: dict[tuple[int, int], mmap.mmap] | None = None  # (begin, end) in the file
        self._crcs: dict[tuple[int, int], int] = {}  # zlib.crc32 of each buffer, once read
        self._done = 0  # every buffer ending at or before this file offset is filled
        self._finished = False  # the thread has ended, whether it read everything or not
        self._closed = False
        threading.Thread(target=self._run, name="qwenchat-prefetch", daemon=True).start()

    def same_file(self, st: os.stat_result) -> bool:
        """Whether `st` (of a file the caller opened) is the file being read, unchanged."""
        mine = self.stat
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (mine.st_dev, mine.st_ino, mine.st_size, mine.st_mtime_ns)

    def take(self, begin: int, end: int) -> tuple[mmap.mmap, int] | None:
        """A buffer starting with the bytes [begin, end) of the file (one whole tensor; the buffer
        may be longer: hugepages.anonymous), once read, and their CRC-32; None when this prefetch
        does not hold that range or could not read it."""
        with self._cond:
            self._cond.wait_for(lambda: self._buffers is not None or self._finished or self._closed)
            if self._buffers is None or (begin, end) not in self._buffers:
                return None
            self._cond.wait_for(lambda: self._done >= end or self._finished or self._closed)
            if self._done < end:
                return None
            return self._buffers.pop((begin, end)), self._crcs.pop((begin, end))

    def close(self) -> None:
        """Stop reading and forget every buffer not taken yet."""
        with self._cond:
            self._closed = True
            self._buffers = {}
            self._cond.notify_all()

    # -- the reading thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            plan = self._allocate(self._ranges())
            for offset, batch, end in _batches(plan):
                if self._closed:
                    return
                views = [memoryview(buf)[: e - b] for b, e, buf in batch]  # a buffer may be longer
                _read_fully(self._fd, list(views), offset)
                crcs = {(b, e): zlib.crc32(view) for (b, e, _), view in zip(batch, views)}
                with self._cond:
                    self._crcs.update(crcs)
                    self._done = end
                    self._cond.notify_all()
        except Exception:
            pass  # what was not read, the reader reads for itself (and reports what is wrong)
        finally:
            os.close(self._fd)
            with self._cond:
                self._finished = True  # no waiter may wait for bytes that will not come
                self._cond.notify_all()

    def _ranges(self) -> list[tuple[int, int]]:
        """The byte range in the file of every tensor, in file order (checked to fit the file)."""
        n = int.from_bytes(os.pread(self._fd, 8, 0), "little")
        if n <= 0 or 8 + n > self.stat.st_size:
            raise ValueError("bad header length")
        header = json.loads(os.pread(self._fd, n, 8))
        header.pop("__metadata__", None)
        base = 8 + n
        ranges = sorted((base + int(e["data_offsets"][0]), base + int(e["data_offsets"][1])) for e in header.values())
        if any(b < base or e < b or e > self.stat.st_size for b, e in ranges):
            raise ValueError("a tensor does not fit the file")
        return [(b, e) for b, e in ranges if e > b]  # an empty tensor needs no buffer

    def _allocate(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int, mmap.mmap]]:
        # Anonymous private memory (2 MB pages where offered: hugepages.py): pages appear as the
        # read fills them, on this thread.
        plan = [(b, e, hugepages.anonymous(e - b)) for b, e in ranges]
        with self._cond:
            if not self._closed:
                self._buffers = {(b, e): buf for b, e, buf in plan}
            self._cond.notify_all()
        return plan


def _batches(plan: list[tuple[int, int, mmap.mmap]]):
    """(file offset, the plan's entries to fill from there, end offset): runs of adjacent tensors."""
    batch: list[tuple[int, int, mmap.mmap]] = []
    start = end = 0
    for b, e, buf in plan:
        if batch and (b != end or end - start >= BATCH_BYTES or len(batch) >= MAX_IOVECS):
            yield start, batch, end
            batch = []
        if not batch:
            start = b
        batch.append((b, e, buf))
        end = e
    if batch:
        yield start, batch, end


def _read_fully(fd: int, views: list[memoryview], offset: int) -> None:
    while views:
        got = os.preadv(fd, views, offset)
        if got <= 0:
            raise OSError(f"unexpected end of file at byte {offset}")
        offset += got
        while views and got >= len(views[0]):
            got -= len(views[0])
            views.pop(0)
        if got:
            views[0] = views[0][got:]
