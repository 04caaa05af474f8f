"""The native int8 matrix product for decoding (native/int8_kernel.c): built once per machine with the
system's C compiler, cached, loaded with ctypes.

Why a kernel of our own: decoding a token reads every weight once, so its speed is the speed at
which the int8 weights stream from memory. torch's `_weight_int8pack_mm` is compute-bound on AVX2
CPUs (it reaches about half the memory bandwidth on two cores); native/int8_kernel.c reaches about 90%
and keeps the activations in float32. Measured on the 2-core test machine: a decode step's matrix
products take 23 ms instead of 51 ms. Short prompts (up to NATIVE_ROWS rows, quantize.py) use it
too: 32 rows cost 0.17 s in it against 0.44 s dequantizing the weights for a float product.

Why built here and not shipped: the package stays pure Python (one wheel for every platform), and
`-march=native` fits the code to this CPU. Building takes about half a second, once; the library
is cached under a name that hashes the source, the compiler (its path and the identity of its
binary, which an upgrade replaces), the flags and the CPU's features (`build_key`), so an upgrade
or another machine sharing the home directory gets its own build.

A library is code that runs as the user, so it is loaded from the cache folder only when that
folder and the file are the user's own and writable by nobody else; otherwise the kernel is
built into a private temporary folder for this process, and the reason says why.

The same library holds a prompt's products on int8 matrix units (native/int8_prompts.c,
`Int8Kernel.int8_prompt_matmul`): AMX tiles where the CPU and the OS allow them (`Int8Kernel.amx`),
plain C loops with the same results elsewhere (tests).

The same library holds the int4 products (native/int4_kernel.c, `Int8Kernel.int4_matmul`): an
AVX2 path chosen at run time by the CPU's features and a plain C one (QWENCHAT_INT4_GENERIC=1 or
`use_generic_int4` force it).

When there is no compiler, the CPU lacks AVX2/FMA, or anything at all goes wrong (the build, the
load, a self-check of the numbers), `load` says why and returns no kernel: the engine then uses
torch's kernel, slower but correct. Nothing here raises.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from qwenchat.engine.processes import remove_leftovers

if TYPE_CHECKING:
    from qwenchat.engine.quantize_int4 import Q4Tensor

NATIVE = Path(__file__).with_name("native")  # the C sources
SOURCES = tuple(NATIVE / n for n in (
    "int8_kernel.c", "decode_step.c", "int4_kernel.c", "int4_quantize.c", "top_logits.c", "int8_prompts.c"))  # one library
INT4_GENERIC_ENV = "QWENCHAT_INT4_GENERIC"  # "1": the int4 products take the plain C path (tests, CPUs that misreport)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-std=c11")
OPENMP = "-fopenmp"  # tried first; a compiler without OpenMP still builds a one-thread kernel
X86 = ("x86_64", "amd64", "i686", "x86")
BUILD_TIMEOUT_S = 120
# A row of x whose largest value passes this many times its root mean square gets a second int8
# row (int8_prompts.c): on the real model 1% of the attention's and MLP's input rows, 57% of the
# down projection's; 8 changed nothing measurable, 32 raised perplexity 0.8%.
COARSE_RATIO = 16.0
_lock = threading.Lock()
_loaded: dict[str, "KernelStatus"] = {}


class Int8Kernel:
    """y = x W^T + b for float32 rows x and an int8 W with one float32 scale per row."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib  # also holds the fused decode step (native/decode_step.c, bound by fused_decode.py)
        fn = lib.qc_int8_matmul
        fn.restype = None
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        fn.argtypes = [ptr, i64, i64, ptr, ptr, ptr, i64, ptr]
        self._fn = fn
        deq = lib.qc_int8_dequantize
        deq.restype = None
        deq.argtypes = [ptr, ptr, i64, i64, ptr]
        self._dequantize = deq
        self.threaded = bool(lib.qc_int8_openmp())
        self._int4 = lib.qc_int4_matmul
        self._int4.restype = ctypes.c_int
        self._int4.argtypes = [ptr, i64, i64, ptr, ptr, ptr, i64, ptr, i64, ptr]
        self._int4_deq = lib.qc_int4_dequantize
        self._int4_deq.restype = None
        self._int4_deq.argtypes = [ptr, ptr, ptr, i64, i64, i64, ptr]
        lib.qc_int4_use_generic.argtypes = [ctypes.c_int]
        self._int4_quantize = lib.qc_int4_quantize
        self._int4_quantize.restype = None
        self._int4_quantize.argtypes = [ptr, i64, i64, i64, ptr, i64, i64, ptr, ptr, ptr]
        self._top = lib.qc_top_logits
        self._top.restype = ctypes.c_int
        self._top.argtypes = [ptr, i64, i64, ptr, i64, ptr, ptr, ptr, i64]
        self.use_generic_int4(os.environ.get(INT4_GENERIC_ENV, "").strip() == "1")
        self._prompt = lib.qc_int8_prompt_matmul
        self._prompt.restype = ctypes.c_int
        self._prompt.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, i64, ptr, ctypes.c_float, ctypes.c_int]
        self.amx = bool(lib.qc_amx_ready())  # the tiles may run here (a failed self-check turns it off)
        self._fits = lib.qc_int8_prompt_fits
        self._fits.restype = ctypes.c_int
        self._fits.argtypes = [i64, i64]

    def use_generic_int4(self, flag: bool) -> str:
        """Force the int4 products onto the plain C path (True) or the best the CPU has (False);
        returns the path now in use: "avx2" or "generic"."""
        return "avx2" if self.lib.qc_int4_use_generic(int(flag)) == 2 else "generic"

    @property
    def int4_path(self) -> str:
        return "avx2" if self.lib.qc_int4_path() == 2 else "generic"

    def int4_matmul(self, x: torch.Tensor, w: "Q4Tensor", bias: torch.Tensor | None) -> torch.Tensor:
        """x (M, K) float32 @ the dequantized int4 matrix w (N, K) ^T + bias (N,) or None ->
        (M, N) float32; x is rounded to 16-bit integers per 32 columns inside (int4_kernel.c)."""
        x = x.contiguous()
        (m, k), n = x.shape, w.q.shape[0]
        if k != w.cols:
            raise ValueError(f"x has {k} columns, the int4 matrix {w.cols}")
        y = torch.empty(m, n, dtype=torch.float32)
        b = None if bias is None else bias.data_ptr()
        if not self._int4(x.data_ptr(), m, k, w.q.data_ptr(), w.scale.data_ptr(), w.low.data_ptr(), w.group, b, n, y.data_ptr()):
            raise MemoryError("the int4 kernel could not allocate its activation buffer")
        return y

    def int4_quantize(self, w: torch.Tensor, out: "Q4Tensor", fracs: tuple[float, ...], steps: int) -> "Q4Tensor":
        """Fill `out` (contiguous rows, as many as w's) with the int4 fit of w (N, K) float32:
        quantize_int4's arithmetic (native/int4_quantize.c)."""
        w = w.to(torch.float32).contiguous()
        f = torch.tensor(fracs, dtype=torch.float32)
        n, k = w.shape
        self._int4_quantize(w.data_ptr(), n, k, out.group, f.data_ptr(), len(fracs), steps, out.q.data_ptr(),
                            out.scale.data_ptr(), out.low.data_ptr())  # fmt: skip
        return out

    def int4_dequantize(self, w: "Q4Tensor", out: torch.Tensor) -> torch.Tensor:
        """out (N, K) float32 (contiguous) = the dequantized int4 matrix w."""
        n = w.q.shape[0]
        self._int4_deq(w.q.data_ptr(), w.scale.data_ptr(), w.low.data_ptr(), w.group, n, w.cols, out.data_ptr())
        return out

    def top_logits(self, y: torch.Tensor, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                   bias: torch.Tensor | None, top: int) -> torch.Tensor:  # fmt: skip
        """In place: the `top` largest of each row of y (M, N) float32 become x (M, K) @ the int8
        rows q (N, K) * scale (N,) (+ bias); all contiguous on the CPU (native/top_logits.c)."""
        x = x.contiguous()
        (m, n), k = y.shape, x.shape[1]
        floats = [t for t in (y, x, scale, bias) if t is not None]
        if not (q.shape == (n, k) and x.shape[0] == m and scale.shape == (n,) and (bias is None or bias.shape == (n,))):
            raise ValueError(f"top_logits: y {tuple(y.shape)}, x {tuple(x.shape)}, q {tuple(q.shape)} do not fit")
        if q.dtype != torch.int8 or any(t.dtype != torch.float32 for t in floats):
            raise ValueError("top_logits: q must be int8 and the rest float32")
        if not all(t.is_contiguous() and t.device.type == "cpu" for t in (*floats, q)):
            raise ValueError("top_logits: every tensor must be contiguous and on the CPU")
        b = None if bias is None else bias.data_ptr()
        if not self._top(y.data_ptr(), m, n, x.data_ptr(), k, q.data_ptr(), scale.data_ptr(), b, top):
            raise ValueError(f"top_logits: {top} logits of {n} cannot be recomputed (at most 256) or out of memory")
        return y

    def matmul(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (M, K) float32, q (N, K) int8, scale (N,) float32, bias (N,) float32 or None, all
        contiguous on the CPU -> (M, N) float32."""
        x = x.contiguous()
        (m, k), n = x.shape, q.shape[0]
        y = torch.empty(m, n, dtype=torch.float32)
        b = None if bias is None else bias.data_ptr()
        # ctypes drops the GIL for the call: the UI thread keeps running while a token computes
        self._fn(x.data_ptr(), m, k, q.data_ptr(), scale.data_ptr(), b, n, y.data_ptr())
        return y

    def amx_fits(self, k: int, n: int) -> bool:
        """Whether the tiles run here and take a product with k columns and n rows of weights
        (whole tiles: int8_prompts.c's qc_int8_prompt_fits)."""
        return self.amx and bool(self._fits(k, n))

    def int8_prompt_matmul(
        self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
        out: torch.Tensor | None = None, amx: bool = True,
    ) -> torch.Tensor:
        """matmul's product with x's rows rounded to int8 (one scale per row, a second int8 row
        where one value dwarfs the rest: native/int8_prompts.c), on the AMX tiles (amx=True:
        `amx_fits` must hold) or in plain C loops; the same numbers either way. x's rows may lie
        apart (the MLP's gated half of its gate/up buffer): no copy. `out` (M, N), contiguous,
        receives the result."""
        x = x if x.stride(-1) == 1 and x.stride(0) >= x.shape[1] else x.contiguous()
        (m, k), n = x.shape, q.shape[0]
        y = out if out is not None and out.data_ptr() % 64 == 0 else torch.empty(m, n, dtype=torch.float32)
        b = None if bias is None else bias.data_ptr()
        if amx and not self.amx_fits(k, n):
            raise ValueError(f"the AMX tiles cannot take this product here (K={k}, N={n}): see amx_fits")
        if not self._prompt(x.data_ptr(), x.stride(0), m, k, q.data_ptr(), scale.data_ptr(), b, n, y.data_ptr(), COARSE_RATIO, int(amx)):
            raise MemoryError("the int8 prompt product could not allocate its buffers")
        return y if out is None or y is out else out.copy_(y)  # the tiles stream into 64-byte lines

    def dequantize(self, q: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out (N, K) float32 = q (N, K) int8 * scale[:, None]; all contiguous on the CPU."""
        n, k = q.shape
        self._dequantize(q.data_ptr(), scale.data_ptr(), n, k, out.data_ptr())
        return out


@dataclass(frozen=True)
class KernelStatus:
    kernel: Int8Kernel | None
    reason: str  # shown in the engine's placement reason
    note: str = ""  # a warning for the user (the cache folder was refused), else ""


class UnsafeCache(Exception):
    """The cache folder or a library in it could be written by someone else."""


def load(cache_dir: Path | None) -> KernelStatus:
    """The kernel, built into `cache_dir` if not there yet (None: a temporary folder, rebuilt by
    every process). Memoized per process."""
    key = str(cache_dir)
    with _lock:
        if key not in _loaded:
            _loaded[key] = _load(cache_dir)
        return _loaded[key]


def _load(cache_dir: Path | None) -> KernelStatus:
    if platform.machine().lower() not in X86:
        return KernelStatus(None, f"torch's int8 kernel (ours is for x86-64 AVX2; this is {platform.machine()})")
    compiler = _compiler()
    if compiler is None:
        return KernelStatus(None, "torch's int8 kernel (no C compiler found; install gcc for ~1.7x faster decoding)")
    note = ""
    try:
        if cache_dir is not None:
            try:
                return _build_and_open(compiler, cache_dir)
            except UnsafeCache as exc:
                note = f"{exc}; the int8 kernel was built in a private temporary folder instead"
            except OSError:
                pass  # a read-only or full cache folder: build for this process only
        with tempfile.TemporaryDirectory(prefix="qwenchat-kernel-") as tmp:  # mode 0700, ours
            status = _build_and_open(compiler, Path(tmp), checked=False)  # a loaded library outlives its file
        return KernelStatus(status.kernel, status.reason + (f"; {note}" if note else ""), note)
    except Exception as exc:  # noqa: BLE001 - any failure means "use torch's kernel", never a crash
        return KernelStatus(None, f"torch's int8 kernel (ours failed to build or load: {_short(exc)})", note)


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    return None


def build_key(compiler: str, sources: list[bytes], flags: tuple[str, ...] = (*FLAGS, OPENMP), cpu: bytes | None = None) -> str:
    """What a built library depends on, hashed: the source bytes, the compiler (its resolved
    path and its binary's size and mtime, which change with every upgrade: cheaper than
    running `cc --version` at each start), the flags and the CPU model and features."""
    real = os.path.realpath(compiler)
    try:
        st = os.stat(real)
        binary = f"{real}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        binary = real
    parts = [*sources, compiler.encode(), binary.encode(), "\0".join(flags).encode(), _cpu_id() if cpu is None else cpu]
    return hashlib.sha256(b"\0\0".join(parts)).hexdigest()[:16]


def _build_and_open(compiler: str, cache_dir: Path, checked: bool = True) -> KernelStatus:
    """checked=False: a folder made private for this process (mkdtemp), nothing to verify."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if checked:
        check_private(cache_dir, "the int8 kernel's cache folder")
    path = cache_dir / f"int8_kernel-{build_key(compiler, [p.read_bytes() for p in SOURCES])}.so"
    remove_leftovers(cache_dir, _BUILDING)  # an app quit mid-build leaves its temporary file (a listdir)
    if not path.exists():
        _build(compiler, path)
    if checked:
        check_private(path, "the int8 kernel library")
    lib = ctypes.CDLL(str(path))
    if not lib.qc_int8_isa():
        return KernelStatus(None, "torch's int8 kernel (this CPU lacks AVX2/FMA)")
    kernel = Int8Kernel(lib)
    _self_check(kernel)
    how = "AVX2, float32 activations" + ("" if kernel.threaded else "; one thread: the compiler lacks OpenMP")
    how += "; AMX int8 tiles for prompts" if kernel.amx else ""
    return KernelStatus(kernel, f"qwenchat's int8 kernel and fused decode step ({how})")


def check_private(path: Path, what: str) -> None:
    """Raise UnsafeCache unless `path` (what a link there leads to) is owned by this user and
    writable by no group or other user: anyone who can write there could make us run their code."""
    st = os.stat(path)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise UnsafeCache(f"{what} {path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCache(f"{what} {path} is writable by other users (fix: chmod go-w {path})")


_BUILDING = re.compile(r"^int8_kernel-[0-9a-f]+\.(?P<pid>\d+)\.tmp\.so$")  # _build's temporary files


def _build(compiler: str, path: Path) -> None:
    """Compile into a temporary name beside `path`, then rename: processes building at the same
    time never load a half-written file."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.so")  # _BUILDING
    try:
        for extra in ([OPENMP], []):
            cmd = [compiler, *FLAGS, *extra, *map(str, SOURCES), "-o", str(tmp), "-lm"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if done.returncode == 0:
                os.chmod(tmp, 0o755)  # not group-writable even under umask 002 (check_private)
                os.replace(tmp, path)
                return
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    finally:
        tmp.unlink(missing_ok=True)


def _self_check(kernel: Int8Kernel) -> None:
    """A wrong build (a broken compiler, a CPU that misreports its features) must not give wrong
    answers: compare against torch on odd sizes that reach every code path (one row of x and
    several, whole and partial blocks of W's rows and columns)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-127, 128, (70, 37), generator=g, dtype=torch.int8)
    scale, bias = torch.rand(70, generator=g), torch.randn(70, generator=g)
    w = q.float() * scale[:, None]
    for rows in (1, 5):
        x = torch.randn(rows, 37, generator=g)
        if not torch.allclose(kernel.matmul(x, q, scale, bias), x @ w.t() + bias, rtol=1e-4, atol=1e-4):
            raise RuntimeError("self-check: results differ from torch's")
    if not torch.equal(kernel.dequantize(q, scale, torch.empty(70, 37)), w):
        raise RuntimeError("self-check: dequantized weights differ from torch's")
    _self_check_int4(kernel, g)
    _self_check_amx(kernel, g)


def _self_check_int4(kernel: Int8Kernel, g: torch.Generator) -> None:
    from qwenchat.engine.quantize_int4 import quantize_int4  # torch-only; no cycle at import time

    w4 = quantize_int4(torch.randn(70, 45, generator=g))  # a partial group, whole and partial row blocks
    w = w4.dequantize()
    if not torch.equal(kernel.int4_dequantize(w4, torch.empty(70, 45)), w):
        raise RuntimeError("self-check: dequantized int4 weights differ from torch's")
    for rows in (1, 5):
        x = torch.randn(rows, 45, generator=g)
        if not torch.allclose(kernel.int4_matmul(x, w4, None), x @ w.t(), rtol=1e-3, atol=1e-3):
            raise RuntimeError("self-check: int4 results differ from torch's")


def _self_check_amx(kernel: Int8Kernel, g: torch.Generator) -> None:
    """The tiles must give the plain loops' bits (exact int32 sums, the same scaling); if they do
    not, prompts keep the float products (kernel.amx off), the rest of the kernel still serves."""
    if not kernel.amx:
        return
    q = torch.randint(-127, 128, (48, 192), generator=g, dtype=torch.int8)  # a partial pair of tiles
    scale, bias = torch.rand(48, generator=g), torch.randn(48, generator=g)
    x = torch.randn(40, 192, generator=g)
    x[3, 7] = 100.0  # a row with a second int8 row
    try:
        same = torch.equal(kernel.int8_prompt_matmul(x, q, scale, bias), kernel.int8_prompt_matmul(x, q, scale, bias, amx=False))
    except (MemoryError, ValueError):
        same = False
    kernel.amx = same


def _cpu_id() -> bytes:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor().encode()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return "\n".join(keep).encode()


def _short(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
