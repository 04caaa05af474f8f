"""The wheel: an installed qwenchat finds its themes (the top-level themes/ folder is packaged
as qwenchat/themes), carries the int8 kernel's C source, and exposes the console script."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return next(out.glob("qwenchat-*.whl"))


def test_wheel_carries_the_themes_and_the_entry_point(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("qwenchat/themes/")}
    assert {p.name for p in (ROOT / "themes").glob("*.toml")} <= shipped and len(shipped) >= 3
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "qwenchat = qwenchat.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_wheel_carries_the_native_kernel_sources(wheel):
    """The kernels are compiled on the user's machine from the sources inside the package."""
    from qwenchat.engine.int8_kernel import SOURCES

    names = zipfile.ZipFile(wheel).namelist()
    package = ROOT / "qwenchat"
    shipped = {f"qwenchat/{p.relative_to(package).as_posix()}" for p in SOURCES}
    assert shipped <= set(names) and len(SOURCES) == 6 and "qwenchat/engine/native/int8_prompts.c" in shipped


def test_installed_wheel_finds_its_themes(wheel, tmp_path):
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    code = (
        "import qwenchat, qwenchat.tui.themes as t\n"
        "print(qwenchat.__file__)\n"
        "print(sorted(t.load_themes(t.builtin_dirs()).themes))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "QWENCHAT_HOME": str(tmp_path / "home")},
    )
    assert out.returncode == 0, out.stderr
    location, names = out.stdout.splitlines()
    assert location.startswith(str(target))  # really the installed copy, not the checkout
    assert {"qwenchat-dark", "qwenchat-light", "qwenchat-high-contrast"} <= set(ast.literal_eval(names))
