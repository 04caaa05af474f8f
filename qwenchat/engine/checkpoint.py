"""Reading a checkpoint tensor by tensor into its final form, and serving it from the int8 cache.

Contract
--------
- `iter_checkpoint(model_dir, cfg, dtype, quantize_keys)` yields (key, value) for every tensor of
  the checkpoint, validated by weights.py's rules (names, shapes; damaged files raise
  WeightsError naming the file). Values are cast to `dtype`, or, for keys in `quantize_keys`
  (key -> "int8", "int4" or "int8+int4"), quantized to a `QTensor` / `Q4Tensor` / both (`HeadWeights`,
  int4 mode's output projection, int4_head.py) from row blocks. Tensors are read with plain file reads into fresh
  memory, never memory-mapped, so the process holds only what the model keeps (a mapped file
  counts in the resident size as its pages are touched, and the fused q/k/v and gate/up copies
  would come on top of it).
- `Int8Checkpoint(model_dir, cfg, keys, cache_root)` iterates the same with those matrices
  quantized, served from the model's int8 cache under `cache_root` (format and checks:
  int8_cache.py; int4 mode has its own file there) when it was built from these very weight files, else quantized from the
  checkpoint and written to a new cache on the way (None: no cache). Every cached tensor is
  checked against its CRC-32 before it is yielded; a damaged one switches to the checkpoint for
  it and the rest and rebuilds the cache, and `note` says so (a warning for the user). `source`
  says where the weights came from. Quantizing 0.5B parameters takes tens of seconds on two
  cores; reading the cache takes a fraction of a second, and none at all on the critical path
  when a caller started reading it ahead with `prefetch.start` (into private memory as well, its
  CRCs computed on that thread; see prefetch.py).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from qwenchat.engine import hugepages, prefetch
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.errors import WeightsError
from qwenchat.engine.int8_kernel import Int8Kernel
from qwenchat.engine.int8_cache import (
    FORMAT, INT4_FORMAT, CacheDamaged, CacheWriter, SourceCheck, remove_stale_temps, source_identity,
    unchanged_since,
)
from qwenchat.engine.prefetch import INT4_CACHE_FILE, Prefetch, int8_cache_path
from qwenchat.engine.quantize import BLOCK_ELEMS, QTensor, quantize_int8
from qwenchat.engine.int4_head import KIND as HEAD_KIND
from qwenchat.engine.int4_head import HeadWeights
from qwenchat.engine.quantize_int4 import GROUP, Q4Tensor, empty_q4, padded, quantize_int4
from qwenchat.engine.weights import REDOWNLOAD, _check_names, expected_shapes, weight_files

LEGACY_CACHE = (".qwenchat", "int8.safetensors")  # where older versions cached, in the model folder
_DTYPES = {
    "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
    "I8": torch.int8, "U8": torch.uint8, "I32": torch.int32, "I64": torch.int64,
}  # fmt: skip
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsReader:
    """A safetensors file read with pread-style file reads (no mmap). `prefetched`: the same
    file being read ahead on a thread (prefetch.py); whole tensors come from it when it has them.
    `checksums` (key -> CRC-32, set by the caller): whole-tensor reads of those keys are checked
    and raise CacheDamaged on a mismatch. `huge`: tensors go to 2 MB pages where offered
    (hugepages.py): the weight caches' quantized matrices, which decoding streams."""

    def __init__(self, path: Path, prefetched: Prefetch | None = None, huge: bool = False) -> None:
        self.path, self.huge = path, huge
        self.prefetched: Prefetch | None = None
        self.checksums: dict[str, int] = {}
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
            t, crc = self._read_tensor(begin, end - begin, dtype, shape, key in self.checksums)
            if key in self.checksums and crc != self.checksums[key]:
                raise CacheDamaged(f"tensor {key} does not match its checksum")
            return t
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        a, b = rows[0], min(rows[1], shape[0])
        return self._read_tensor(begin + a * row_bytes, (b - a) * row_bytes, dtype, (b - a, *shape[1:]))[0]

    def _read_tensor(
        self, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...], crc: bool = False
    ) -> tuple[torch.Tensor, int | None]:
        """The tensor at `offset`, and with crc=True the CRC-32 of its bytes."""
        start = self.base + offset
        ahead = self.prefetched.take(start, start + nbytes) if self.prefetched is not None else None
        if ahead is not None:
            data, data_crc = ahead  # the prefetch thread computed the CRC
            return torch.frombuffer(data, dtype=torch.uint8, count=nbytes).view(dtype).view(shape), data_crc
        buf = hugepages.empty((nbytes,), torch.uint8) if self.huge else torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        self.f.seek(self.base + offset)
        done = 0
        while done < nbytes:
            got = self.f.readinto(view[done:])
            if not got:
                raise ValueError(f"unexpected end of file at byte {self.base + offset + done}")
            done += got
        return buf.view(dtype).view(shape), zlib.crc32(view) if crc else None

    def _read_exact(self, offset: int, n: int) -> bytes:
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("unexpected end of file")
        return data


Kinds = Mapping[str, str] | frozenset[str]  # key -> "int8"/"int4"/"int8+int4"; a plain set means int8
Weight = torch.Tensor | QTensor | Q4Tensor | HeadWeights  # a checkpoint tensor as served


def _kinds(keys: Kinds) -> dict[str, str]:
    return dict(keys) if isinstance(keys, Mapping) else {k: "int8" for k in keys}


def _quantized(
    f: "SafetensorsReader", key: str, shape: tuple[int, ...], kind: str, native: Int8Kernel | None
) -> QTensor | Q4Tensor | HeadWeights:
    """The matrix `key` quantized from row blocks (no full-size float copy); kind "int8+int4"
    (int4_head.KIND): both from the same rows."""
    n, k = shape
    q8 = QTensor(hugepages.empty((n, k), torch.int8), torch.empty(n)) if kind in ("int8", HEAD_KIND) else None
    q4 = empty_q4(n, k) if kind in ("int4", HEAD_KIND) else None
    step = max(1, BLOCK_ELEMS // k)
    for a in range(0, n, step):
        rows = f.read(key, (a, a + step))
        if q8 is not None:
            quantize_int8(rows, q8, a)
        if q4 is not None:
            quantize_int4(rows, q4, a, native=native)
    if q8 is not None and q4 is not None:
        return HeadWeights(q8, q4)
    return q8 if q8 is not None else q4


def iter_checkpoint(
    model_dir: Path, cfg: Qwen2Config, dtype: torch.dtype, quantize_keys: Kinds = frozenset(),
    native: Int8Kernel | None = None,
) -> Iterator[tuple[str, Weight]]:
    """(key, tensor) for every checkpoint tensor, validated, cast or quantized (int4 in C with
    `native`); one at a time."""
    kinds = _kinds(quantize_keys)
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
                    if key in kinds:
                        yield key, _quantized(f, key, shape, kinds[key], native)
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


class Int8Checkpoint:
    """Iterating yields every checkpoint tensor with the `quantize_keys` as int8 QTensors and the
    rest float32, from the model's int8 cache under `cache_root` when it is current and intact,
    else from the checkpoint (writing the cache on the way). `source` then says which: "cache",
    "quantized, cache written", "quantized, cache rebuilt (<why>)" or "quantized, not cached
    (<why>)"; `note` is a warning for the user when the cache was damaged, else ""."""

    def __init__(
        self, model_dir: Path, cfg: Qwen2Config, quantize_keys: Kinds, cache_root: Path | None = None,
        native: Int8Kernel | None = None,
    ) -> None:
        """quantize_keys: key -> "int8", "int4" or "int8+int4" (a set: all int8). With any int4 matrix the
        cache is int4 mode's own file (INT4_CACHE_FILE, INT4_FORMAT). native: quantizes int4 in C."""
        self.model_dir, self.cfg, self.quantize_keys = model_dir, cfg, _kinds(quantize_keys)
        self.native = native
        int4 = bool({"int4", HEAD_KIND} & set(self.quantize_keys.values()))
        self.format = INT4_FORMAT if int4 else FORMAT
        self.path = None if cache_root is None else int8_cache_path(cache_root, model_dir)
        if self.path is not None and int4:
            self.path = self.path.with_name(INT4_CACHE_FILE)
        self.source = self.note = ""

    def __iter__(self) -> Iterator[tuple[str, Weight]]:
        files, shapes = _checkpoint_files(self.model_dir, self.cfg)
        self._shapes = shapes
        keys = [k for k in shapes if k in files]
        if self.path is None:
            self.source = "quantized, not cached (no cache folder)"
            yield from iter_checkpoint(self.model_dir, self.cfg, torch.float32, self.quantize_keys, self.native)
            return
        paths = sorted(set(files.values()))
        layout = _cache_layout({k: shapes[k] for k in keys}, self.quantize_keys)
        reader, why = self._open_cache(paths, layout)
        served: set[str] = set()
        if reader is not None:
            try:
                with reader:
                    for key in keys:
                        value = self._read_cached(reader, key)
                        served.add(key)  # checked: the model may keep it whatever comes next
                        yield key, value
                self.source = "cache"
                return
            except CacheDamaged as e:
                why = f"damaged: {e}"
        if why.startswith("damaged"):
            self.note = f"the int8 weight cache {self.path} was {why}; rebuilt it from the model's weights"
        yield from self._build(paths, layout, served, why)

    def _read_cached(self, reader: SafetensorsReader, key: str) -> Weight:
        try:
            kind = self.quantize_keys.get(key)
            cols = self._shapes[key][-1]  # the checkpoint's: cached int4 rows are padded to whole groups
            if kind == "int8":
                return QTensor(reader.read(key + ":q"), reader.read(key + ":scale"))
            if kind == "int4":
                return Q4Tensor(reader.read(key + ":q"), reader.read(key + ":scale"), reader.read(key + ":low"), cols)
            if kind == HEAD_KIND:
                q8 = QTensor(reader.read(key + ":q"), reader.read(key + ":scale"))
                return HeadWeights(q8, Q4Tensor(*(reader.read(f"{key}:{p}4") for p in ("q", "scale", "low")), cols))
            return reader.read(key)
        except (OSError, ValueError) as e:  # a truncated file, a failing disk
            raise CacheDamaged(f"{key}: {e}") from e

    def _open_cache(self, paths: list[Path], layout: dict) -> tuple[SafetensorsReader | None, str]:
        """The cache's reader, its checksums set, when it was built from these weight files in
        this layout; else None and why ("" when there is no cache yet)."""
        ahead = prefetch.claim(self.path)  # started early by startup.load_engine, if at all
        remove_stale_temps(self.path.parent)  # what a process killed mid-write left (a listdir)
        if not self.path.is_file():
            if ahead is not None:
                ahead.close()
            return None, ""
        try:
            reader = SafetensorsReader(self.path, ahead, huge=True)
        except Exception as e:  # noqa: BLE001 - whatever is wrong with it, it is rebuilt
            if ahead is not None:
                ahead.close()
            return None, f"damaged: {e}"
        why = self._check(reader, paths, layout)
        if why:
            reader.close()
            return None, why
        return reader, ""

    def _check(self, reader: SafetensorsReader, paths: list[Path], layout: dict) -> str:
        meta = reader.metadata
        if meta.get("format") != self.format or _layout_of(reader) != layout:
            return "written by another version of qwenchat"
        try:
            identity = json.loads(meta["source"])
            reader.checksums = {k: int(v, 16) for k, v in json.loads(meta["checksums"]).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return f"damaged: its metadata cannot be read ({e})"
        if reader.checksums.keys() != layout.keys():
            return "damaged: its checksums do not cover its tensors"
        try:
            if not SourceCheck(self.path.parent).matches(paths, identity):
                return "the model's weight files changed"
        except OSError as e:
            return f"the model's weight files cannot be checked ({e.strerror or e})"
        return ""

    def _build(
        self, paths: list[Path], layout: dict, served: set[str], why: str
    ) -> Iterator[tuple[str, torch.Tensor | QTensor]]:
        """Quantize from the checkpoint, writing the cache; yields the keys not `served` already."""
        try:
            identity, memo = source_identity(paths)
        except OSError as e:
            identity, memo = [], {}
            writer = CacheWriter(self.path)
            writer.why = f"cannot read the weight files ({e.strerror or e})"
        else:
            writer = CacheWriter.open(self.path, layout, identity, self.format)
        ok = False
        try:
            for key, value in iter_checkpoint(self.model_dir, self.cfg, torch.float32, self.quantize_keys, self.native):
                for name, t in _cache_entries(key, value):
                    writer.put(name, t)
                if key not in served:
                    yield key, value
            ok = True
        finally:
            if ok and writer.ok and not unchanged_since(paths, memo):
                writer.ok, writer.why = False, "the model's weight files changed while they were read"
            if ok and writer.ok:
                writer.commit()
            else:
                writer.abort()
        if writer.ok:
            SourceCheck(self.path.parent).remember(memo)
            _remove_legacy_cache(self.model_dir)
            self.source = f"quantized, cache rebuilt ({why})" if why else "quantized, cache written"
        else:
            self.source = f"quantized, not cached ({writer.why})"


def _remove_legacy_cache(model_dir: Path) -> None:
    """Older versions cached int8 weights inside the model folder (a Hub snapshot too, where they
    do not belong); the new cache replaces it."""
    folder = model_dir / LEGACY_CACHE[0]
    try:
        (folder / LEGACY_CACHE[1]).unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        pass


def _cache_entries(key: str, value: Weight) -> Iterator[tuple[str, torch.Tensor]]:
    """The cache's tensors for checkpoint tensor `key`: int8 as key:q and key:scale, int4 as
    key:q, key:scale, key:low, both (HeadWeights) with the int4 parts suffixed 4."""
    if isinstance(value, HeadWeights):
        yield from _cache_entries(key, value.exact)
        yield from ((f"{name}4", t) for name, t in _cache_entries(key, value.fast))
    elif isinstance(value, QTensor):
        yield from ((f"{key}:q", value.q), (f"{key}:scale", value.scale))
    elif isinstance(value, Q4Tensor):
        yield from ((f"{key}:{part}", getattr(value, part)) for part in ("q", "scale", "low"))
    else:
        yield key, value


def _cache_layout(shapes: dict[str, tuple[int, ...]], kinds: Mapping[str, str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    layout: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        kind = kinds.get(key)
        if kind in ("int8", HEAD_KIND):
            layout[key + ":q"] = ("I8", shape)
            layout[key + ":scale"] = ("F32", shape[:1])
        if kind in ("int4", HEAD_KIND):
            n, kp = shape[0], padded(shape[1])
            four = "4" if kind == HEAD_KIND else ""
            layout[f"{key}:q{four}"] = ("U8", (n, kp // 2))
            layout[f"{key}:scale{four}"] = layout[f"{key}:low{four}"] = ("BF16", (n, kp // GROUP))
        if kind is None:
            layout[key] = ("F32", shape)
    return layout


def _layout_of(reader: SafetensorsReader) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (_NAMES[dt], shape) for k, (dt, shape, _, _) in reader.entries.items()}
