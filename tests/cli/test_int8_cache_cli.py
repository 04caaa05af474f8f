"""`qwenchat ask` with int8 weights: the cache goes under qwenchat's cache folder, and a damaged
one is rebuilt with a warning on stderr, never served."""

from __future__ import annotations

import shutil
from pathlib import Path

from qwenchat.engine.prefetch import int8_cache_path
from tests.cli.test_ask import qwenchat


def test_a_damaged_int8_cache_is_rebuilt_with_a_warning(tiny_model, isolated_home, tmp_path):
    model = Path(shutil.copytree(tiny_model, tmp_path / "m"))
    args = ["ask", "-m", str(model), "--quantize", "int8", "--max-tokens", "4", "--seed", "1", "hi"]
    first = qwenchat(args, isolated_home)
    assert first.returncode == 0, first.stderr
    cache = int8_cache_path(isolated_home / "cache" / "int8", model)
    assert cache.is_file() and sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    with open(cache, "r+b") as f:  # same size, same header: bytes in the middle overwritten
        f.seek(cache.stat().st_size // 2)
        f.write(b"!" * 256)
    second = qwenchat(args, isolated_home)
    assert second.returncode == 0, second.stderr
    err = second.stderr.decode()
    assert "int8 weight cache" in err and "damaged" in err and "rebuilt" in err
    assert second.stdout == first.stdout  # the same weights answered
    third = qwenchat(args, isolated_home)
    assert third.returncode == 0 and "int8 weight cache" not in third.stderr.decode()
