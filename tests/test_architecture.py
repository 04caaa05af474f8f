"""The layering rules, checked on the sources: dependencies point down only.

cli/tui -> session -> engine, store, hub. The engine imports nothing else from qwenchat and no
UI, storage or Hub library; the store and hub see no tensors; the UI never imports torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qwenchat"


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(sub: str) -> list[Path]:
    root = PACKAGE / sub
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


RULES = {
    "engine": ("textual", "typer", "rich", "sqlite3", "huggingface_hub", "platformdirs",
               "qwenchat.store", "qwenchat.tui", "qwenchat.cli", "qwenchat.session", "qwenchat.hub",
               "qwenchat.models", "qwenchat.config", "qwenchat.paths", "qwenchat.errors", "transformers"),
    "store": ("torch", "textual", "qwenchat.engine", "qwenchat.tui", "qwenchat.session"),
    "hub": ("torch", "textual", "qwenchat.tui", "qwenchat.session", "transformers"),
    "tui": ("torch", "safetensors", "transformers"),
    "session": ("textual", "typer", "rich", "qwenchat.tui", "qwenchat.cli"),
    "config": ("torch", "textual", "qwenchat.engine"),
    # a remote server as a backend: the engine's torch-free contract only, no store, no face
    "remote": ("torch", "textual", "typer", "rich", "sqlite3", "huggingface_hub", "qwenchat.store", "qwenchat.tui",
               "qwenchat.cli", "qwenchat.server", "qwenchat.session", "qwenchat.startup", "qwenchat.hub"),
}
# torch-free records every layer may read: the engine's contract (chunks, replies, options)
ALLOWED = ("qwenchat.engine.records",)


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_nothing_forbidden(layer):
    offenders = []
    for path in modules(layer):
        for name in imports(path):
            if name not in ALLOWED and any(name == bad or name.startswith(bad + ".") for bad in RULES[layer]):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders


def test_no_runtime_module_imports_transformers_or_unpickles():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "transformers" not in imports(path), path
        assert "torch.load(" not in text and "pickle" not in imports(path), path


def test_help_and_package_import_do_not_load_torch():
    code = (
        "import sys, qwenchat, qwenchat.cli, qwenchat.session, qwenchat.engine.records\n"
        "from qwenchat.cli import run\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    run(['--help'])\n"
        "print('torch' in sys.modules, 'textual' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_remote_uses_only_the_engines_torch_free_modules():
    torch_free = {"qwenchat.engine.records", "qwenchat.engine.errors"}
    offenders = [f"{path.relative_to(PACKAGE.parent)} imports {name}" for path in modules("remote")
                 for name in imports(path) if name.startswith("qwenchat.engine") and name not in torch_free]
    assert modules("remote") and not offenders


def test_importing_the_remote_backend_loads_neither_torch_nor_openai():
    code = (
        "import sys, qwenchat.remote, qwenchat.remote.engine, qwenchat.remote.client, qwenchat.remote.reference\n"
        "print('torch' in sys.modules, 'openai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
