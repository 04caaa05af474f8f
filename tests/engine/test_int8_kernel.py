"""The native int8 kernel: built and cached once, exact against float32 on the same int8 weights,
used for decode rows only, and a fallback to torch's kernel with a reason whenever it can't be had."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwenchat.engine import int8_kernel
from qwenchat.engine.cache import KVCache
from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.quantize import NATIVE_ROWS, Int8Linear, Scratch, quantize_int8
from tests.engine.tolerance import EPS32, sum_order_bound, within_sum_order


def _avx2() -> bool:
    try:
        return " avx2 " in Path("/proc/cpuinfo").read_text() and " fma " in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


CAN_BUILD = platform.machine().lower() in int8_kernel.X86 and _avx2() and int8_kernel._compiler() is not None
needs_kernel = pytest.mark.skipif(not CAN_BUILD, reason="needs an x86-64 AVX2 CPU and a C compiler")


@pytest.fixture
def fresh(monkeypatch):
    """load() memoizes per process; each test starts without it."""
    monkeypatch.setattr(int8_kernel, "_loaded", {})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[int8_kernel.Int8Kernel, Path]:
    """The kernel built once for the module, and its library file."""
    if not CAN_BUILD:
        pytest.skip("needs an x86-64 AVX2 CPU and a C compiler")
    folder = tmp_path_factory.mktemp("kernels")
    status = int8_kernel._load(folder)
    assert status.kernel is not None, status.reason
    (library,) = folder.glob("int8_kernel-*.so")
    return status.kernel, library


@pytest.fixture(scope="module")
def kernel(built) -> int8_kernel.Int8Kernel:
    return built[0]


@pytest.fixture
def prebuilt(built, monkeypatch):
    """For tests about where the kernel is kept and whether a folder or library is trusted, not
    about compiling: a build with the real compiler copies the module's library (the same
    compiler, sources and flags give the same file) instead of compiling again, 3.5 s of CPU
    each. Compiling is what test_built_once_then_reused_from_the_cache and the OpenMP test check."""
    real_build, compiler = int8_kernel._build, int8_kernel._compiler()

    def build(cc: str, path: Path) -> None:
        if cc != compiler:
            return real_build(cc, path)
        shutil.copyfile(built[1], path)
        os.chmod(path, 0o755)

    monkeypatch.setattr(int8_kernel, "_build", build)


def _w(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 0.1


@needs_kernel
@pytest.mark.parametrize(
    ("m", "n", "k"),
    [(1, 896, 896), (2, 1000, 4864), (1, 7, 3), (2, 133, 77), (1, 64, 16), (4, 130, 64), (7, 131, 29), (33, 66, 896)],
)
def test_matmul_equals_float32_on_the_same_int8_weights(kernel, m, n, k):
    qt = quantize_int8(_w(n, k, n + k))
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    bias = torch.randn(n)
    want = x.double() @ qt.dequantize(torch.float64).t() + bias.double()
    got = kernel.matmul(x, qt.q, qt.scale, bias)
    assert got.shape == (m, n) and got.dtype == torch.float32
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    no_bias = kernel.matmul(x, qt.q, qt.scale, None)
    assert torch.allclose(no_bias + bias, got, rtol=1e-6, atol=1e-6)


@needs_kernel
def test_built_once_then_reused_from_the_cache(tmp_path, fresh):
    """Built under umask 002 (once the test of its own: a build costs 3.5 s of CPU), neither the
    folder nor the library is writable by the group."""
    folder = tmp_path / "kernels"
    old = os.umask(0o002)
    try:
        first = int8_kernel.load(folder)
    finally:
        os.umask(old)
    assert first.kernel is not None and "qwenchat's int8 kernel" in first.reason
    assert first.kernel.threaded and "one thread" not in first.reason  # gcc and clang have OpenMP
    assert int8_kernel.load(folder) is first  # memoized in the process
    (built,) = folder.glob("int8_kernel-*.so")
    assert built.stat().st_mode & 0o022 == 0 and folder.stat().st_mode & 0o077 == 0
    stamp = built.stat().st_mtime_ns
    code = (
        "import sys; from pathlib import Path; from qwenchat.engine import int8_kernel as k\n"
        "s = k.load(Path(sys.argv[1])); print(s.kernel is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True"], out.stderr
    assert [p.name for p in folder.iterdir()] == [built.name]  # no second build, no temporary left
    assert built.stat().st_mtime_ns == stamp


def test_no_compiler_falls_back_with_a_reason(tmp_path, fresh, monkeypatch):
    monkeypatch.setattr(int8_kernel, "_compiler", lambda: None)
    monkeypatch.setattr(int8_kernel.platform, "machine", lambda: "x86_64")
    status = int8_kernel.load(tmp_path)
    assert status.kernel is None
    assert "torch's int8 kernel" in status.reason and "no C compiler" in status.reason


def test_a_failing_build_falls_back_with_the_compilers_message(tmp_path, fresh, monkeypatch):
    fake_cc = tmp_path / "cc"
    fake_cc.write_text("#!/bin/sh\necho 'cc: fatal error: no space left' >&2\nexit 1\n")
    fake_cc.chmod(0o755)
    monkeypatch.setattr(int8_kernel, "_compiler", lambda: str(fake_cc))
    monkeypatch.setattr(int8_kernel.platform, "machine", lambda: "x86_64")
    status = int8_kernel.load(tmp_path / "kernels")
    assert status.kernel is None
    assert "failed to build" in status.reason and "no space left" in status.reason
    assert not list((tmp_path / "kernels").iterdir())  # nothing half-written left behind


def test_other_architectures_use_torchs_kernel(tmp_path, fresh, monkeypatch):
    monkeypatch.setattr(int8_kernel.platform, "machine", lambda: "arm64")
    status = int8_kernel.load(tmp_path)
    assert status.kernel is None and "arm64" in status.reason
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


@needs_kernel
def test_a_wrong_result_disables_the_kernel(tmp_path, fresh, prebuilt, monkeypatch):
    monkeypatch.setattr(int8_kernel.Int8Kernel, "matmul", lambda self, x, q, s, b: torch.zeros(x.shape[0], q.shape[0]))
    status = int8_kernel.load(tmp_path)
    assert status.kernel is None and "self-check" in status.reason


@needs_kernel
def test_linear_uses_the_kernel_up_to_native_rows(kernel, monkeypatch):
    lin = Int8Linear(quantize_int8(_w(300, 128, 5)), torch.randn(300), Scratch(), native=kernel)
    calls = []
    real = kernel.matmul
    monkeypatch.setattr(kernel, "matmul", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    n = NATIVE_ROWS + 1
    x = torch.randn(n, 128, generator=torch.Generator().manual_seed(6))
    batch = lin(x.view(1, n, 128))[0]  # a long prompt: dequantized float32 product
    assert calls == []
    short = torch.cat([lin(x[:NATIVE_ROWS].view(1, NATIVE_ROWS, 128))[0], lin(x[NATIVE_ROWS:].view(1, 1, 128))[0]])
    assert calls == [NATIVE_ROWS, 1]
    # the same function either way: float32 throughout, only the order of the sums differs
    w = lin.qweight.float() * lin.scales[:, None]  # exact: bfloat16 scales times 7-bit integers
    bound = sum_order_bound(x, w) + 2 * EPS32 * batch.abs()  # the sums, then the bias's rounding
    assert within_sum_order(short, batch, bound)


@needs_kernel
def test_engine_int8_decode_equals_the_dequantized_float32_model(tiny_model, tmp_path, prebuilt):
    """With our kernel, int8 mode is exactly a float32 model whose weights are the dequantized
    int8 ones: decode-step logits agree to float32 rounding."""
    engine = ChatEngine.load(tiny_model, device="cpu", quantize="int8", kernel_dir=tmp_path)
    assert "qwenchat's int8 kernel" in engine.info.placement_reason
    m, cfg = engine.model, engine.model.config
    ref = ChatEngine.load(tiny_model, device="cpu", quantize="none").model
    with torch.no_grad():  # give the float model exactly the int8 model's (dequantized) weights
        for layer, rl in zip(m.model.layers, ref.model.layers):
            for name in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"):
                q, r = layer.get_submodule(name), rl.get_submodule(name)
                r.weight.copy_(q.qweight.float() * q.scales[:, None])
        ref.model.embed_tokens.weight.copy_(m.model.embed_tokens.qweight.float() * m.model.embed_tokens.scales[:, None])
        if ref.lm_head.weight.data_ptr() != ref.model.embed_tokens.weight.data_ptr():
            ref.lm_head.weight.copy_(m.lm_head.qweight.float() * m.lm_head.scales[:, None])

    def cache() -> KVCache:
        return KVCache(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, 64, torch.float32, torch.device("cpu"))

    ids = torch.randint(0, 400, (1, 12), generator=torch.Generator().manual_seed(3))
    c1, c2 = cache(), cache()
    m(ids[:, :8], c1, 0)
    ref(ids[:, :8], c2, 0)
    for i in range(8, 12):
        got, want = m(ids[:, i : i + 1], c1, i), ref(ids[:, i : i + 1], c2, i)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_engine_without_the_kernel_says_so(tiny_model, fresh, monkeypatch):
    monkeypatch.setattr(int8_kernel, "_compiler", lambda: None)
    monkeypatch.setattr(int8_kernel.platform, "machine", lambda: "x86_64")
    engine = ChatEngine.load(tiny_model, device="cpu", quantize="int8")
    assert "no C compiler" in engine.info.placement_reason
    lin = engine.model.model.layers[0].mlp.down_proj
    assert lin.native is None and lin.kernel == hasattr(torch, "_weight_int8pack_mm")



@needs_kernel
def test_a_compiler_without_openmp_still_gives_a_kernel_on_one_thread(tmp_path, fresh, monkeypatch):
    """-fopenmp is tried first; a compiler that rejects it builds the one-thread kernel."""
    real = int8_kernel._compiler()
    wrapper = tmp_path / "cc"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(int8_kernel, "_compiler", lambda: str(wrapper))
    status = int8_kernel.load(tmp_path / "kernels")
    assert status.kernel is not None and not status.kernel.threaded
    assert "one thread" in status.reason


@needs_kernel
def test_dequantize_in_one_pass_equals_torchs(kernel):
    qt = quantize_int8(_w(333, 901, 8))
    want = Scratch().dequantize(qt.q, qt.scale, torch.float32).clone()
    got = Scratch(kernel).dequantize(qt.q, qt.scale, torch.float32)
    assert torch.equal(got, want)


@needs_kernel
def test_an_unwritable_cache_folder_still_gives_a_kernel(tmp_path, fresh, prebuilt):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would go")
    status = int8_kernel.load(blocked / "kernels")
    assert status.kernel is not None, status.reason


@needs_kernel
@needs_kernel
def test_a_build_a_quit_cut_short_leaves_nothing_behind(tmp_path, fresh, prebuilt):
    """The app quit during the first load (the build runs on a daemon thread): its temporary
    library stayed in the cache folder for good (a new-user run)."""
    folder = tmp_path / "kernels"
    folder.mkdir(mode=0o700)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dead = folder / f"int8_kernel-0123456789abcdef.{gone}.tmp.so"
    live = folder / f"int8_kernel-0123456789abcdef.{os.getppid()}.tmp.so"  # our parent: still building
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    assert int8_kernel.load(folder).kernel is not None
    assert not dead.exists() and live.exists()


def test_a_group_writable_cache_folder_is_refused(tmp_path, fresh, prebuilt):
    """Another user who can write the folder could put their own library there: it is not
    loaded from (nor built into); the kernel is built in a private temporary folder, with a note."""
    shared = tmp_path / "kernels"
    shared.mkdir()
    shared.chmod(0o775)
    status = int8_kernel.load(shared)
    assert status.kernel is not None, status.reason
    assert "writable by other users" in status.note and str(shared) in status.note
    assert "private temporary folder" in status.reason
    assert list(shared.iterdir()) == []


@needs_kernel
def test_a_folder_of_another_user_is_refused(tmp_path, fresh, prebuilt, monkeypatch):
    monkeypatch.setattr(int8_kernel.os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    status = int8_kernel.load(tmp_path / "kernels")
    assert status.kernel is not None and "belongs to another user" in status.note


@needs_kernel
def test_a_library_writable_by_others_is_not_loaded(tmp_path, fresh, prebuilt, monkeypatch):
    assert int8_kernel.load(tmp_path).kernel is not None
    (built,) = tmp_path.glob("int8_kernel-*.so")
    assert built.stat().st_mode & 0o022 == 0
    built.chmod(0o666)
    monkeypatch.setattr(int8_kernel, "_loaded", {})
    opened = []
    real = int8_kernel.ctypes.CDLL
    monkeypatch.setattr(int8_kernel.ctypes, "CDLL", lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    status = int8_kernel.load(tmp_path)
    assert status.kernel is not None and "int8 kernel library" in status.note
    assert str(built) not in opened and len(opened) == 1


def test_the_build_key_covers_source_compiler_flags_and_cpu(tmp_path):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\n")
    src = [b"int f(void) { return 1; }"]
    key = int8_kernel.build_key(str(cc), src, ("-O3",), b"flags: avx2")
    assert key == int8_kernel.build_key(str(cc), src, ("-O3",), b"flags: avx2")
    assert key != int8_kernel.build_key(str(cc), [b"int f(void) { return 2; }"], ("-O3",), b"flags: avx2")
    assert key != int8_kernel.build_key(str(cc), src, ("-O2",), b"flags: avx2")
    assert key != int8_kernel.build_key(str(cc), src, ("-O3",), b"flags: avx2 avx512f")
    assert key != int8_kernel.build_key(str(tmp_path / "gcc"), src, ("-O3",), b"flags: avx2")
    cc.write_text("#!/bin/sh\n# upgraded\n")  # same path, another compiler binary
    assert key != int8_kernel.build_key(str(cc), src, ("-O3",), b"flags: avx2")
