"""Whether the optional `serve` dependencies are installed, checked before anything imports them,
so `qwenchat serve` without them is one clear error naming the extra, not an ImportError."""

from __future__ import annotations

import importlib.util

from qwenchat.errors import QwenchatError

# import name -> distribution name, as `pip install` wants it
MODULES = {"starlette": "starlette", "uvicorn": "uvicorn", "sse_starlette": "sse-starlette", "pydantic": "pydantic"}


def missing() -> list[str]:
    """The distributions of the `serve` extra that cannot be imported."""
    out = []
    for module, dist in MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
            found = False
        if not found:
            out.append(dist)
    return out


def require() -> None:
    absent = missing()
    if absent:
        raise QwenchatError(
            f"qwenchat serve needs the 'serve' extra, which is not installed (missing: {', '.join(absent)})",
            "pip install 'qwenchat[serve]'",
        )
