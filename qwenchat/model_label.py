"""How a model's stored name is shown where there is little room (the sidebar, the details
line under a reply, `qwenchat history list`).

Conversations store the name the model was loaded by: a catalog alias, a Hub id, a local folder
or `.gguf` path, or a server URL (`http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct`). In a
narrow column the last path component says the most, and for a server, which model on which
host. Stdlib only.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def short_model(name: str | None) -> str:
    """e.g. "Qwen2.5-0.5B-Instruct" for `/home/me/models/Qwen2.5-0.5B-Instruct/`, "model" for
    `~/m/model.gguf`, "Qwen2-72B-Instruct @ gpu-box:8000" for a server URL naming that model."""
    name = (name or "").strip()
    if name.lower().startswith(("http://", "https://")):
        parts = urlsplit(name)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        model = parts.fragment.rstrip("/").rsplit("/", 1)[-1]
        return f"{model} @ {host}" if model else host
    last = name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return last[: -len(".gguf")] if last.lower().endswith(".gguf") and len(last) > 5 else last
