"""The store, the config and their commands stay light: no torch, textual or engine beyond its
torch-free records (the generation options' declaration, which the config checks against)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_store_and_config_import_nothing_heavy() -> None:
    code = (
        "import sys, qwenchat.store, qwenchat.config, qwenchat.cli.history, "
        "qwenchat.cli.config_cmd\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'textual', 'transformers')"
        " or (m.startswith('qwenchat.engine.') and m != 'qwenchat.engine.records')"
        " or m.startswith('qwenchat.tui')]\n"
        "print(','.join(sorted(bad)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == ""
