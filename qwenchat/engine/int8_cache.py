"""The on-disk int8 weight cache: what it records, how it is checked, how it is written.

Contract
--------
- One safetensors file per model, `int8.safetensors`, in a folder of its own under qwenchat's
  cache (where: `prefetch.int8_cache_path`); int4 mode's weights go to `int4.safetensors` in the
  same folder (format INT4_FORMAT), under the same rules. Its metadata holds the format, the identity of the
  checkpoint it was built from (name, size and SHA-256 of every weight file) and the CRC-32 of
  every tensor. Readers check each tensor's CRC as they read it (checkpoint.py raises
  `CacheDamaged`), so damaged bytes are rebuilt, never served.
- The weight files are hashed once, when the cache is built (about a second per GB, beside tens
  of seconds of quantizing). At load, `SourceCheck` compares them with the recorded identity
  cheaply: `source.json` beside the cache remembers the stat (device, inode, size, mtime, ctime)
  at which each file's hash was computed. An unchanged stat means unchanged bytes: every write,
  rename or copy moves the ctime, which no user can set back. A file whose stat changed while its
  size did not (a chmod, a restore from backup, a replacement with the same size and mtime) is
  hashed again: the same bytes keep the cache, other bytes rebuild it. A file changed within
  RACY_NS of its stat (the clock's granularity) is never trusted on its stat alone.
- Written atomically and durably: a temporary `.<name>.<pid>.tmp` in the same folder, flushed to
  disk (fsync) before it is renamed over the old file, then the folder fsynced. Temporary files
  left by a killed process are removed by the next write; nothing ever reads them.

What it does not know: which tensors a model has (checkpoint.py passes the layout) or how they
are quantized (quantize.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import zlib
from pathlib import Path

import torch

from qwenchat.engine.processes import remove_leftovers

FORMAT = "qwenchat-int8/2"
INT4_FORMAT = "qwenchat-int4/3"  # int4 mode's cache: its own file beside the int8 one (prefetch.INT4_CACHE_FILE)
MEMO_FILE = "source.json"
RACY_NS = 2_000_000_000  # a file changed this close to its stat might change again unseen
HASH_CHUNK = 8 << 20
_TMP = re.compile(r"^\.(.+)\.(?P<pid>\d+)\.tmp$")
DTYPE_NAMES = {torch.float32: "F32", torch.int8: "I8", torch.uint8: "U8", torch.bfloat16: "BF16"}
_ITEMSIZE = {"F32": 4, "I8": 1, "U8": 1, "BF16": 2}


class CacheDamaged(Exception):
    """A cached tensor's bytes do not match the checksum written with them (or cannot be read)."""


# -- the source's identity -------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stat_key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def source_identity(paths: list[Path]) -> tuple[list[dict], dict[str, dict]]:
    """(identity for the cache's metadata, memo entries for source.json): every file hashed."""
    identity, memo = [], {}
    for path in paths:
        checked, st = time.time_ns(), os.stat(path)
        sha = file_sha256(path)
        identity.append({"name": path.name, "size": st.st_size, "sha256": sha})
        memo[path.name] = {"stat": stat_key(st), "sha256": sha, "checked_ns": checked}
    return identity, memo


def unchanged_since(paths: list[Path], memo: dict[str, dict]) -> bool:
    """Whether every file still has the stat its memo entry was made at (checked after a build
    read them: a file replaced meanwhile must not be recorded with the hash of its old bytes)."""
    try:
        return all(stat_key(os.stat(p)) == memo[p.name]["stat"] for p in paths)
    except (OSError, KeyError):
        return False


class SourceCheck:
    """Whether the weight files are still those a cache was built from (see the module's contract)."""

    def __init__(self, folder: Path) -> None:
        self.memo_path = folder / MEMO_FILE
        self.rehashed = False  # some file's stat changed and it was hashed again

    def matches(self, paths: list[Path], identity: object) -> bool:
        try:
            recorded = {e["name"]: (int(e["size"]), str(e["sha256"])) for e in identity}  # type: ignore[union-attr]
        except (TypeError, KeyError, ValueError):
            return False
        if sorted(recorded) != sorted(p.name for p in paths):
            return False
        memo, changed = self._memo(), False
        for path in paths:
            size, sha = recorded[path.name]
            checked, st = time.time_ns(), os.stat(path)
            if st.st_size != size:
                return False
            if self._trusted(memo.get(path.name), st, sha):
                continue
            self.rehashed = True
            if file_sha256(path) != sha:
                return False
            memo[path.name], changed = {"stat": stat_key(st), "sha256": sha, "checked_ns": checked}, True
        if changed:
            self.remember(memo)
        return True

    def remember(self, memo: dict[str, dict]) -> None:
        try:
            write_atomically(self.memo_path, json.dumps(memo, sort_keys=True).encode())
        except OSError:
            pass  # only costs a rehash next time

    @staticmethod
    def _trusted(entry: dict | None, st: os.stat_result, sha: str) -> bool:
        if not isinstance(entry, dict):
            return False
        checked = entry.get("checked_ns")
        return (
            entry.get("stat") == stat_key(st)
            and entry.get("sha256") == sha
            and isinstance(checked, int)
            and st.st_ctime_ns < checked - RACY_NS
        )

    def _memo(self) -> dict[str, dict]:
        try:
            memo = json.loads(self.memo_path.read_bytes())
        except (OSError, ValueError):
            return {}
        return memo if isinstance(memo, dict) else {}


# -- writing ---------------------------------------------------------------------------------


def temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def remove_stale_temps(folder: Path) -> None:
    """Delete temporary files of processes that are gone (killed mid-write)."""
    remove_leftovers(folder, _TMP)


def write_atomically(target: Path, data: bytes) -> None:
    tmp = temp_path(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CacheWriter:
    """Writes a safetensors file whose header (all offsets) is known before any tensor arrives,
    so tensors are written as they stream past, in any order. The checksums go into the header
    at the end (fixed-width placeholders keep its length); `commit` makes the file durable and
    renames it into place. Any OSError turns the writer off (`ok` False, `why` says why)."""

    def __init__(self, target: Path) -> None:
        self.target, self.tmp = target, temp_path(target)
        self.ok, self.why, self.f = False, "", None
        self.offsets: dict[str, int] = {}
        self.crcs: dict[str, int] = {}
        self.meta: dict[str, str] = {}
        self.header: dict[str, object] = {}

    @classmethod
    def open(
        cls, target: Path, layout: dict[str, tuple[str, tuple[int, ...]]], identity: list[dict], fmt: str = FORMAT
    ) -> "CacheWriter":
        w = cls(target)
        w.meta = {"format": fmt, "source": json.dumps(identity, sort_keys=True)}
        pos = 0
        for key, (dt, shape) in layout.items():
            n = math.prod(shape) * _ITEMSIZE[dt]
            w.header[key] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + n]}
            w.offsets[key] = pos
            pos += n
        blob = w._header_blob({k: 0 for k in layout})
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(target.parent)
            w.f = open(w.tmp, "wb")
            w.f.write(blob)
            w.f.truncate(len(blob) + pos)
            w.base, w.ok = len(blob), True
        except OSError as e:
            w._fail(e)
        return w

    def _header_blob(self, crcs: dict[str, int]) -> bytes:
        meta = dict(self.meta, checksums=json.dumps({k: f"{c:08x}" for k, c in crcs.items()}))
        blob = json.dumps({"__metadata__": meta, **self.header}).encode()
        blob += b" " * (-len(blob) % 8)
        return len(blob).to_bytes(8, "little") + blob

    def put(self, key: str, t: torch.Tensor) -> None:
        if not self.ok:
            return
        data = memoryview(t.contiguous().view(torch.uint8).reshape(-1).numpy())
        self.crcs[key] = zlib.crc32(data)
        try:
            self.f.seek(self.base + self.offsets[key])
            self.f.write(data)
        except OSError as e:
            self._fail(e)

    def commit(self) -> None:
        """Header with the checksums, fsync, rename over the target, fsync the folder."""
        if not self.ok:
            return
        if self.crcs.keys() != self.offsets.keys():
            self.ok, self.why = False, "not every tensor was written"
            return self.abort()
        try:
            blob = self._header_blob({k: self.crcs[k] for k in self.offsets})
            assert len(blob) == self.base, "fixed-width checksums keep the header's length"
            self.f.seek(0)
            self.f.write(blob)
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None
            os.replace(self.tmp, self.target)
            fsync_dir(self.target.parent)
        except OSError as e:
            self._fail(e)

    def abort(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = None
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError:
            pass

    def _fail(self, e: OSError) -> None:
        self.ok, self.why = False, f"{type(e).__name__}: {e.strerror or e}"
        self.abort()
