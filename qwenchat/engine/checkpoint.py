"""Reading a checkpoint tensor by tensor into its final form, and the on-disk int8 cache.

Contract
--------
- `iter_checkpoint(model_dir, cfg, dtype, quantize_keys)` yields (key, value) for every tensor of
  the checkpoint, validated by weights.py's rules (names, shapes; damaged files raise
  WeightsError naming the file). Values are cast to `dtype`, or, for keys in `quantize_keys`,
  quantized to a `QTensor` from row blocks. Tensors are read with plain file reads into fresh
  memory, never memory-mapped, so the process holds only what the model keeps (a mapped file
  counts in the resident size as its pages are touched, and the fused q/k/v and gate/up copies
  would come on top of it).
- `Int8Checkpoint(model_dir, cfg, keys)` iterates the same with those matrices quantized, served from the cache
  file `<model_dir>/.qwenchat/int8.safetensors` when it matches the checkpoint (size and mtime of
  each weight file, format version), else quantized from the checkpoint and written to that
  cache on the way (atomically; a read-only directory just means no cache). Its `source` says
  which happened. Quantizing 0.5B parameters takes tens of seconds on two cores; reading
  the cache takes a fraction of a second, and none at all on the critical path when a caller
  started reading it ahead with `prefetch.start` (into private memory as well; see prefetch.py).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from qwenchat.engine import prefetch
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.errors import WeightsError
from qwenchat.engine.prefetch import Prefetch, int8_cache_path
from qwenchat.engine.quantize import BLOCK_ELEMS, QTensor, quantize_int8
from qwenchat.engine.weights import REDOWNLOAD, _check_names, expected_shapes, weight_files

CACHE_VERSION = "1"
_DTYPES = {
    "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
    "I8": torch.int8, "U8": torch.uint8, "I32": torch.int32, "I64": torch.int64,
}  # fmt: skip
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsReader:
    """A safetensors file read with pread-style file reads (no mmap). `prefetched`: the same
    file being read ahead on a thread (prefetch.py); whole tensors come from it when it has them."""

    def __init__(self, path: Path, prefetched: Prefetch | None = None) -> None:
        self.path = path
        self.prefetched: Prefetch | None = None
        self.f = open(path, "rb", buffering=0)
        try:
            st = os.fstat(self.f.fileno())
            size = st.st_size
            if prefetched is not None and prefetched.same_file(st):
                self.prefetched, prefetched = prefetched, None
            n = int.from_bytes(self._read_exact(0, 8), "little")
            if n <= 0 or 8 + n > size or n > 100_000_000:
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(self._read_exact(8, n))
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            self.base = 8 + n
            self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
            for key, e in header.items():
                dtype = _DTYPES[e["dtype"]]
                shape = tuple(int(s) for s in e["shape"])
                begin, end = (int(x) for x in e["data_offsets"])
                if end - begin != math.prod(shape) * dtype.itemsize or self.base + end > size or begin < 0:
                    raise ValueError(f"tensor {key} does not fit the file (truncated?)")
                self.entries[key] = (dtype, shape, begin, end)
        except Exception:
            self.close()
            raise
        finally:
            if prefetched is not None:  # another file, or this one changed since: unusable
                prefetched.close()

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()
        if self.prefetched is not None:
            self.prefetched.close()

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key][1]

    def read(self, key: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        dtype, shape, begin, end = self.entries[key]
        if rows is None:
            return self._read_tensor(begin, end - begin, dtype, shape)
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        a, b = rows[0], min(rows[1], shape[0])
        return self._read_tensor(begin + a * row_bytes, (b - a) * row_bytes, dtype, (b - a, *shape[1:]))

    def _read_tensor(self, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        start = self.base + offset
        ahead = self.prefetched.take(start, start + nbytes) if self.prefetched is not None else None
        if ahead is not None:
            return torch.frombuffer(ahead, dtype=torch.uint8).view(dtype).view(shape)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        self.f.seek(self.base + offset)
        done = 0
        while done < nbytes:
            got = self.f.readinto(view[done:])
            if not got:
                raise ValueError(f"unexpected end of file at byte {self.base + offset + done}")
            done += got
        return buf.view(dtype).view(shape)

    def _read_exact(self, offset: int, n: int) -> bytes:
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("unexpected end of file")
        return data


def iter_checkpoint(
    model_dir: Path, cfg: Qwen2Config, dtype: torch.dtype, quantize_keys: frozenset[str] = frozenset()
) -> Iterator[tuple[str, torch.Tensor | QTensor]]:
    """(key, tensor) for every checkpoint tensor, validated, cast or quantized; one at a time."""
    files, shapes = _checkpoint_files(model_dir, cfg)
    for path in sorted(set(files.values())):
        try:
            with SafetensorsReader(path) as f:
                for key in (k for k, p in files.items() if p == path):
                    shape = f.shape(key)
                    if shape != shapes[key]:
                        raise WeightsError(
                            f"{path.name}: tensor {key} has shape {shape}, but config.json implies {shapes[key]}",
                            "config.json and the weights come from different models; re-download",
                        )
                    if key in quantize_keys:
                        n, k = shape
                        out = QTensor(torch.empty(n, k, dtype=torch.int8), torch.empty(n))
                        step = max(1, BLOCK_ELEMS // k)
                        for a in range(0, n, step):
                            quantize_int8(f.read(key, (a, a + step)), out, a)
                        yield key, out
                    else:
                        yield key, f.read(key).to(dtype)
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(f"cannot read {path}: {e}", REDOWNLOAD) from e


def _checkpoint_files(model_dir: Path, cfg: Qwen2Config) -> tuple[dict[str, Path], dict[str, tuple[int, ...]]]:
    files = weight_files(model_dir)
    shapes = expected_shapes(cfg)
    if cfg.tie_word_embeddings:
        files.pop("lm_head.weight", None)  # some tied checkpoints still carry a copy; unused
    _check_names(model_dir, files, shapes)
    return files, shapes


def _fingerprint(files: dict[str, Path]) -> str:
    stats = []
    for path in sorted(set(files.values())):
        st = path.stat()
        stats.append([path.name, st.st_size, st.st_mtime_ns])
    return json.dumps({"version": CACHE_VERSION, "files": stats}, sort_keys=True)


class Int8Checkpoint:
    """Iterating yields every checkpoint tensor with the `quantize_keys` as int8 QTensors and the
    rest float32, from the int8 cache when it is current, else from the checkpoint (writing the
    cache on the way). `source` then says which: "cache", "quantized, cache written" or
    "quantized, not cached (<why>)"."""

    def __init__(self, model_dir: Path, cfg: Qwen2Config, quantize_keys: frozenset[str]) -> None:
        self.model_dir, self.cfg, self.quantize_keys = model_dir, cfg, quantize_keys
        self.path = int8_cache_path(model_dir)
        self.source = ""

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor | QTensor]]:
        files, shapes = _checkpoint_files(self.model_dir, self.cfg)
        fingerprint = _fingerprint(files)
        layout = _cache_layout({k: s for k, s in shapes.items() if k in files}, self.quantize_keys)
        reader = self._open_cache(fingerprint, layout)
        if reader is not None:
            self.source = "cache"
            with reader:
                try:
                    for key in (k for k in shapes if k in files):
                        if key in self.quantize_keys:
                            yield key, QTensor(reader.read(key + ":q"), reader.read(key + ":scale"))
                        else:
                            yield key, reader.read(key)
                except (OSError, ValueError) as e:
                    raise WeightsError(
                        f"cannot read the int8 cache {self.path}: {e}", f"delete {self.path.parent} and load again"
                    ) from e
            return
        writer = _CacheWriter.open(self.path, layout, fingerprint)
        self.source = "quantized, cache written" if writer.ok else f"quantized, not cached ({writer.why})"
        ok = False
        try:
            for key, value in iter_checkpoint(self.model_dir, self.cfg, torch.float32, self.quantize_keys):
                if isinstance(value, QTensor):
                    writer.put(key + ":q", value.q)
                    writer.put(key + ":scale", value.scale)
                else:
                    writer.put(key, value)
                yield key, value
            ok = True
        finally:
            writer.close(commit=ok)
            if ok and not writer.ok and writer.why:
                self.source = f"quantized, not cached ({writer.why})"

    def _open_cache(self, fingerprint: str, layout: dict) -> SafetensorsReader | None:
        ahead = prefetch.claim(self.path)  # started early by session.load_engine, if at all
        if not self.path.is_file():
            if ahead is not None:
                ahead.close()
            return None
        try:
            reader = SafetensorsReader(self.path, ahead)
        except Exception:
            if ahead is not None:
                ahead.close()
            return None  # damaged or foreign: rebuilt and replaced below
        if reader.metadata.get("fingerprint") == fingerprint and _layout_of(reader) == layout:
            return reader
        reader.close()
        return None


def _cache_layout(shapes: dict[str, tuple[int, ...]], quantize_keys: frozenset[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    layout: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        if key in quantize_keys:
            layout[key + ":q"] = ("I8", shape)
            layout[key + ":scale"] = ("F32", shape[:1])
        else:
            layout[key] = ("F32", shape)
    return layout


def _layout_of(reader: SafetensorsReader) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (_NAMES[dt], shape) for k, (dt, shape, _, _) in reader.entries.items()}


class _CacheWriter:
    """Writes a safetensors file whose header (all offsets) is known before any tensor arrives,
    so tensors are written as they stream past, in any order; renamed into place at the end."""

    def __init__(self) -> None:
        self.ok, self.why, self.f, self.offsets = False, "", None, {}
        self.tmp: Path | None = None
        self.target: Path | None = None

    @classmethod
    def open(cls, target: Path, layout: dict[str, tuple[str, tuple[int, ...]]], fingerprint: str) -> "_CacheWriter":
        w = cls()
        header: dict[str, object] = {"__metadata__": {"fingerprint": fingerprint}}
        pos = 0
        for key, (dt, shape) in layout.items():
            n = math.prod(shape) * _DTYPES[dt].itemsize
            header[key] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + n]}
            w.offsets[key] = pos
            pos += n
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            w.tmp, w.target = target.with_name(f"{target.name}.{os.getpid()}.tmp"), target
            w.f = open(w.tmp, "wb")
            w.f.write(len(blob).to_bytes(8, "little") + blob)
            w.base = 8 + len(blob)
            w.f.truncate(w.base + pos)
            w.ok = True
        except OSError as e:
            w.why = f"{type(e).__name__}: {e.strerror or e}"
            w.close(commit=False)
        return w

    def put(self, key: str, t: torch.Tensor) -> None:
        if not self.ok:
            return
        try:
            self.f.seek(self.base + self.offsets[key])
            self.f.write(memoryview(t.contiguous().view(torch.uint8).reshape(-1).numpy()))
        except OSError as e:
            self.ok, self.why = False, f"{type(e).__name__}: {e.strerror or e}"
            self.close(commit=False)

    def close(self, commit: bool) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                commit = False
            self.f = None
        if self.tmp is None:
            return
        try:
            if commit and self.ok:
                os.replace(self.tmp, self.target)
            else:
                self.tmp.unlink(missing_ok=True)
        except OSError:
            pass
        self.tmp = None
