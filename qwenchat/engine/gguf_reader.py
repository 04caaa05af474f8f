"""A bounded reader of GGUF files (llama.cpp's format, versions 2 and 3, little-endian).

Why not `gguf.GGUFReader`: it makes a numpy view for every element of every metadata array
(about 1.5 KB of memory each), so a crafted 1.6 MB file can cost hundreds of megabytes and a
slightly larger one all of it. Here nothing is allocated before the file is known to hold it:

- every count and length is checked against the bytes that remain (an array of N values needs
  at least N times its smallest encoding), and a claim the file cannot back is refused with a
  WeightsError naming the field;
- numeric arrays are numpy views of the mapped file (no copy, no object per element); string
  arrays become lists of str (each at least 8 bytes in the file, so memory stays a small
  multiple of the file's metadata size); arrays nest at most `MAX_DEPTH` deep;
- tensors are described (`TensorInfo`) with their data as a view of the mapped file, after
  checking type, rank, alignment and that the data lies inside the file.

`read(path, stop_when=keys)` stops after the metadata once every key named is found, without
reading the tensor table. The module knows nothing about model architectures.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwenchat.engine.errors import WeightsError

VERSIONS = (2, 3)
MAX_DEPTH = 3  # arrays of arrays of arrays; GGUF writers produce flat arrays
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 1 << 16  # bytes in a key or tensor name
DEFAULT_ALIGNMENT = 32
STRING, ARRAY = 8, 9
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRUCT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MIN_SIZE = {**{t: struct.calcsize(f) for t, f in _STRUCT.items()}, STRING: 8, ARRAY: 12}
_U64 = struct.Struct("<Q")
_TYPED_TENSORS = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF's ne order: innermost (row length) first
    n_elements: int
    n_bytes: int
    data_offset: int
    data: np.ndarray  # a view of the mapped file: typed for F32/F16/..., raw bytes otherwise


@dataclass
class GGUFContents:
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]


class _Damaged(Exception):
    """The file cannot be what it claims; the message says where."""


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def need(self, n: int, what: str) -> None:
        left = len(self.buf) - self.pos
        if n > left:
            raise _Damaged(f"{what} needs {n:,} bytes, but only {left:,} remain in the file")

    def take(self, code: int, what: str) -> Any:
        fmt = _STRUCT[code]
        self.need(_MIN_SIZE[code], what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += _MIN_SIZE[code]
        return value

    def raw(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self, what: str, limit: int | None = None) -> str:
        n = self.take(10, what)
        if limit is not None and n > limit:
            raise _Damaged(f"{what} is {n:,} bytes long (at most {limit:,} expected)")
        data = self.raw(n, what)
        if limit is None:
            return data.decode("utf-8", errors="replace")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Damaged(f"{what} is not valid UTF-8") from None

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        if vtype == STRING:
            return self.string(f"the text of field {key!r}")
        if vtype == ARRAY:
            return self.array(key, depth)
        if vtype not in _STRUCT:
            raise _Damaged(f"field {key!r} has an unknown value type {vtype}")
        return self.take(vtype, f"field {key!r}")

    def array(self, key: str, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            raise _Damaged(f"field {key!r} nests arrays more than {MAX_DEPTH} deep")
        itype, count = self.take(4, f"field {key!r}"), self.take(10, f"field {key!r}")
        if itype not in _MIN_SIZE:
            raise _Damaged(f"field {key!r} is an array of an unknown value type {itype}")
        left = len(self.buf) - self.pos
        if count * _MIN_SIZE[itype] > left:
            raise _Damaged(
                f"field {key!r} claims {count:,} elements, more than the {left:,} bytes left in the file can hold"
            )
        if itype in _NUMPY:
            values = np.frombuffer(self.buf, dtype=_NUMPY[itype], count=count, offset=self.pos)
            self.pos += values.nbytes
            return values
        if itype == STRING:
            return self.strings(key, count)
        return [self.value(itype, key, depth + 1) for _ in range(count)]

    def strings(self, key: str, count: int) -> list[str]:
        # The vocabulary and merges: hundreds of thousands of strings, so a lean loop.
        buf, pos, end, unpack = self.buf, self.pos, len(self.buf), _U64.unpack_from
        out = []
        for i in range(count):
            if pos + 8 > end:
                raise _Damaged(f"element {i} of field {key!r} runs past the end of the file")
            (n,) = unpack(buf, pos)
            pos += 8
            if n > end - pos:
                raise _Damaged(f"element {i} of field {key!r} needs {n:,} bytes, but only {end - pos:,} remain")
            out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out


def read(path: Path, stop_when: set[str] | None = None) -> GGUFContents:
    """Parse `path`; with `stop_when`, stop after the metadata once all those keys are found
    (the tensor table is then left unread and `tensors` is empty)."""
    path = Path(path)
    buf = _map(path)
    cur = _Cursor(buf)
    try:
        if cur.raw(4, "the magic") != b"GGUF":
            raise _not_gguf(path)
        version = cur.take(4, "the version")
        if version & 0xFFFF == 0:
            raise WeightsError(f"{path.name} is a big-endian GGUF file", "convert it to little-endian with llama.cpp")
        if version not in VERSIONS:
            raise WeightsError(f"{path.name} is GGUF version {version}; qwenchat reads versions 2 and 3",
                               "convert it with a current llama.cpp")
        n_tensors, n_fields = cur.take(10, "the tensor count"), cur.take(10, "the field count")
        cur.need(n_fields * 13, f"{n_fields:,} metadata fields")  # key length, type, one byte
        metadata: dict[str, Any] = {}
        for _ in range(n_fields):
            key = cur.string("a metadata key", MAX_NAME)
            if key in metadata:
                raise _Damaged(f"field {key!r} appears twice")
            metadata[key] = cur.value(cur.take(4, f"field {key!r}"), key)
            if stop_when is not None and stop_when <= metadata.keys():
                return GGUFContents(version, metadata, [])
        if stop_when is not None:
            return GGUFContents(version, metadata, [])
        tensors = _tensors(cur, n_tensors, metadata, path)
    except _Damaged as e:
        raise WeightsError(f"{path.name} is truncated or damaged: {e}",
                           "download the file again and compare its size and checksum with the source") from None
    return GGUFContents(version, metadata, tensors)


def _tensors(cur: _Cursor, count: int, metadata: dict[str, Any], path: Path) -> list[TensorInfo]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    cur.need(count * 24, f"{count:,} tensor descriptions")  # name length, rank, type, offset
    infos = []
    for i in range(count):
        name = cur.string(f"the name of tensor {i}", MAX_NAME)
        rank = cur.take(4, f"tensor {name}")
        if not 1 <= rank <= MAX_DIMS:
            raise _Damaged(f"tensor {name} has {rank} dimensions (1 to {MAX_DIMS} allowed)")
        shape = tuple(cur.take(10, f"tensor {name}") for _ in range(rank))
        raw_type, offset = cur.take(4, f"tensor {name}"), cur.take(10, f"tensor {name}")
        try:
            qtype = GGMLQuantizationType(raw_type)
        except ValueError:
            raise _Damaged(f"tensor {name} has an unknown type {raw_type}") from None
        infos.append((name, shape, qtype, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Damaged(f"general.alignment is {alignment!r}, not a power of two")
    start = -(-cur.pos // alignment) * alignment
    size, seen, tensors = len(cur.buf), set(), []
    for name, shape, qtype, offset in infos:
        if name in seen:
            raise _Damaged(f"tensor {name} appears twice")
        seen.add(name)
        block, type_size = GGML_QUANT_SIZES[qtype]
        n_elements = int(np.prod(shape, dtype=object))
        if shape[0] % block or offset % alignment:
            raise _Damaged(f"tensor {name}'s shape or offset does not fit its type {qtype.name}")
        n_bytes = n_elements // block * type_size
        at = start + offset
        if at + n_bytes > size:
            raise _Damaged(f"tensor {name} runs past the end of the file")
        dims = tuple(reversed(shape))
        if qtype.name in _TYPED_TENSORS:
            data = np.frombuffer(cur.buf, dtype=_TYPED_TENSORS[qtype.name], count=n_elements, offset=at).reshape(dims)
        else:
            data = np.frombuffer(cur.buf, dtype=np.uint8, count=n_bytes, offset=at)
            data = data.reshape(quant_shape_to_byte_shape(dims, qtype))
        tensors.append(TensorInfo(name, qtype, shape, n_elements, n_bytes, at, data))
    return tensors


def _map(path: Path) -> mmap.mmap:
    try:
        with path.open("rb") as f:
            if f.seek(0, 2) < 4:
                raise _not_gguf(path)
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise WeightsError(f"no such file: {path}", "check the path") from None
    except IsADirectoryError:
        raise WeightsError(f"{path} is a folder, not a GGUF file", "pass the .gguf file itself") from None
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror or e}", None) from None


def _not_gguf(path: Path) -> WeightsError:
    return WeightsError(
        f"{path.name} is not a GGUF file (it does not start with the GGUF magic)",
        "pass a .gguf model file, e.g. one exported by llama.cpp",
    )


def plain(value: Any) -> Any:
    """A metadata value as plain Python (numpy arrays as lists), for code that wants lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value

