"""What machine a benchmark ran on: the CPU's model, its cores and the vector features that
decide which of our kernels run (AVX2, AVX-512, bf16, AMX), and the library versions.

    .venv/bin/python benchmarks/machine.py      # one line, as the reports' header prints it

Read from /proc/cpuinfo (Linux); elsewhere the model is `platform.processor()` and no features
are listed.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

# The CPU flags that matter to our kernels and to the engines we compare with, in this order.
FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
            "avx_vnni", "amx_bf16", "amx_int8", "amx_tile", "neon", "asimd", "sve")


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """The model name and the features of FEATURES that the first CPU's flags list, in order."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, [f for f in FEATURES if f in flags]


def cpu() -> tuple[str, list[str]]:
    try:
        model, features = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, features = "", []
    return model or platform.processor() or platform.machine(), features


def machine() -> dict[str, Any]:
    model, features = cpu()
    versions = {}
    for mod in ("torch", "transformers", "llama_cpp"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing or broken package is simply not listed
            pass
    return {"cpu": model, "cores": os.cpu_count(), "features": features, "python": platform.python_version(),
            **versions}


def header(m: dict[str, Any]) -> str:
    """`machine: MODEL, N cores (avx2 fma ...); python ..., torch ...`"""
    features = " ".join(m.get("features") or []) or "no listed vector features"
    rest = ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("cpu", "cores", "features"))
    return f"machine: {m['cpu']}, {m['cores']} cores ({features}); {rest}"


if __name__ == "__main__":
    print(header(machine()))
    sys.exit(0)
