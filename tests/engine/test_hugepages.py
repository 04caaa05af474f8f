"""Weight buffers in 2 MB pages (hugepages.py): the buffers hold exactly what torch's would, the
big ones are advised MADV_HUGEPAGE (the kernel's "hg" flag on their mapping, where Linux has
transparent huge pages), and the readers that use them (the cache reader, the read-ahead, the
fused matrices) give the same tensors as before."""

from __future__ import annotations

import gc
import mmap
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from qwenchat.engine import hugepages, prefetch
from qwenchat.engine.checkpoint import SafetensorsReader
from qwenchat.engine.quantize import cat_rows, quantize_int8

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
needs_thp = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE") or not THP.exists(),
    reason="transparent huge pages are a Linux feature this kernel lacks",
)


def _advised(t: torch.Tensor) -> bool:
    """Whether the mapping holding t's first byte carries MADV_HUGEPAGE ("hg" in its VmFlags)."""
    addr, flags, inside = t.data_ptr(), "", False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("VmFlags:"):
            flags = line
            break
    return " hg" in flags


def test_a_small_buffer_is_an_ordinary_mapping_of_its_size_and_a_big_one_whole_pages():
    assert len(hugepages.anonymous(1000)) == 1000
    big = hugepages.anonymous(hugepages.PAGE + 5)
    assert len(big) == 2 * hugepages.PAGE  # the tail is never written, so it takes no memory
    assert big[: hugepages.PAGE + 5] == bytes(hugepages.PAGE + 5)  # zero-filled


@needs_thp
def test_big_tensors_are_advised_and_small_ones_are_torchs():
    big = hugepages.empty((3000, 1000), torch.int8)
    assert big.shape == (3000, 1000) and big.dtype == torch.int8 and _advised(big)
    big.fill_(7)
    assert int(big.sum()) == 7 * 3000 * 1000
    small = hugepages.empty((10, 10), torch.float32)
    assert small.shape == (10, 10) and not _advised(small)


def test_cat_equals_torchs_and_keeps_its_memory_alive():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randint(-127, 128, (n, 2048), generator=g, dtype=torch.int8) for n in (700, 900, 10)]
    out = hugepages.cat(parts)
    del parts[1:]
    gc.collect()
    assert out.shape == (1610, 2048) and torch.equal(out[:700], parts[0])
    assert torch.equal(hugepages.cat([torch.ones(2, 3), torch.zeros(1, 3)]), torch.tensor([[1.0] * 3] * 2 + [[0.0] * 3]))


@needs_thp
def test_fused_int8_matrices_are_advised():
    w = torch.randn(3000, 1024)  # 3 MB of int8, in two parts of 1.5 MB
    fused = cat_rows([quantize_int8(w[:1500]), quantize_int8(w[1500:])])
    assert _advised(fused.q) and torch.equal(fused.q, quantize_int8(w).q)


@pytest.fixture()
def cache_file(tmp_path) -> Path:
    g = torch.Generator().manual_seed(1)
    tensors = {"big": torch.randn(700, 1024, generator=g), "small": torch.randn(3, 5, generator=g),
               "int8": torch.randint(-127, 128, (2100, 1000), generator=g, dtype=torch.int8)}  # fmt: skip
    path = tmp_path / "int8.safetensors"
    save_file(tensors, str(path))
    return path


def test_the_cache_reader_and_the_read_ahead_give_the_same_tensors_as_plain_reads(cache_file):
    with SafetensorsReader(cache_file) as plain:
        want = {k: plain.read(k).clone() for k in plain.entries}
    with SafetensorsReader(cache_file, huge=True) as huge:
        for k, t in want.items():
            assert torch.equal(huge.read(k), t), k
    ahead = prefetch.start(cache_file)  # buffers rounded up to whole 2 MB pages: only the tensor is served
    assert ahead is not None
    with SafetensorsReader(cache_file, prefetch.claim(cache_file), huge=True) as reader:
        reader.checksums = {}
        for k, t in want.items():
            assert torch.equal(reader.read(k), t), k


@needs_thp
def test_the_cache_readers_big_tensors_are_advised(cache_file):
    with SafetensorsReader(cache_file, huge=True) as reader:
        assert _advised(reader.read("big")) and _advised(reader.read("int8"))
    with SafetensorsReader(cache_file) as reader:  # a model's own files: torch's memory
        assert not _advised(reader.read("big"))
