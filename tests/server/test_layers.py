"""The server is a face: it reaches the engine only through its public records and errors (and
the session, for --save), never the UI or the CLI, and `import qwenchat.cli` stays free of
the server's dependencies."""

from __future__ import annotations

import subprocess
import sys

from tests.test_architecture import PACKAGE, imports

ALLOWED_ENGINE = {"qwenchat.engine.records", "qwenchat.engine.errors"}


def test_server_imports_no_face_and_no_engine_internals():
    offenders = []
    for path in sorted((PACKAGE / "server").rglob("*.py")):
        for name in imports(path):
            if name.startswith(("qwenchat.cli", "qwenchat.tui", "textual", "typer", "torch")):
                offenders.append(f"{path.name} imports {name}")
            if name.startswith("qwenchat.engine") and name not in ALLOWED_ENGINE:
                offenders.append(f"{path.name} imports {name}")
    assert not offenders


def test_cli_import_loads_no_server_dependency():
    code = ("import sys, qwenchat.cli\n"
            "print(sorted(m for m in ('starlette', 'uvicorn', 'sse_starlette', 'pydantic', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
