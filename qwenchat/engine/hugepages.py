"""Weights in 2 MB pages where Linux offers them (transparent huge pages).

Why: decoding streams every weight once a token. With 4 KB pages the CPU walks the page tables
every 4 KB of that stream; with 2 MB pages, 512 times less often. On a 2-core Intel Xeon (the
real 0.5B model, int8, an engine alone) decoding went from 34.1-35.1 to 45.3-46.5 tok/s, for
~0.15 GB more peak memory (BENCHMARKS.md, twentieth session).

Most Linux systems ship transparent huge pages in "madvise" mode: a mapping gets them only when
asked for before it is written. torch asks for every allocation of 2 MB and more when
THP_MEM_ALLOC_ENABLE=1, but that includes the KV cache and scratch buffers, and faulting those
in 2 MB pages on the first prompt made `ask`'s first token 0.8 s late. So only weight buffers ask:
each is its own anonymous private mapping, advised MADV_HUGEPAGE before the read fills it, its
length rounded up to whole 2 MB pages (the kernel aligns such mappings to 2 MB; the tail past the
tensor is never written, so it takes no memory). Elsewhere (no madvise, another OS, THP off) the
advice is a no-op or refused, and the memory is ordinary pages.

Torch-free at import on purpose: prefetch.py allocates with it before torch is imported.
"""

from __future__ import annotations

import math
import mmap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PAGE = 2 << 20  # a huge page on x86-64 and most arm64 kernels
MIN_BYTES = PAGE  # smaller buffers cannot fill one
OFFERED = hasattr(mmap, "MADV_HUGEPAGE")  # Linux; elsewhere (macOS, Windows) ordinary memory


def anonymous(nbytes: int) -> mmap.mmap:
    """A private anonymous mapping of at least `nbytes` (>= 1), zero-filled on first touch, in
    2 MB pages where the system allows it."""
    if nbytes < MIN_BYTES or not OFFERED:
        return _mapping(nbytes)
    buf = _mapping(-(-nbytes // PAGE) * PAGE)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # THP compiled out or refused: ordinary pages
        pass
    return buf


def _mapping(nbytes: int) -> mmap.mmap:
    flags = getattr(mmap, "MAP_PRIVATE", None)  # Windows has no flags (its anonymous maps are private)
    return mmap.mmap(-1, nbytes) if flags is None else mmap.mmap(-1, nbytes, flags=flags)


def empty(shape: tuple[int, ...], dtype: "torch.dtype") -> "torch.Tensor":
    """An uninitialised CPU tensor (like torch.empty) in `anonymous` memory."""
    import torch

    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or not OFFERED:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(anonymous(nbytes), dtype=torch.uint8, count=nbytes).view(dtype).view(shape)


def cat(parts: list["torch.Tensor"]) -> "torch.Tensor":
    """torch.cat of CPU tensors along rows into `empty` memory (a fused weight matrix); on other
    devices, torch.cat."""
    import torch

    if parts[0].device.type != "cpu":
        return torch.cat(parts)
    out = empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), parts[0].dtype)
    return torch.cat(parts, out=out)
