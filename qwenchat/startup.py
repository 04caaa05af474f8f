"""The start-up path the faces share: from settings to a loaded engine, and which conversation
a face continues with which model and settings.

- `load_engine`: find (download) the model the settings name and load it, reading the int8
  weight cache ahead on another core while torch imports; or, when the model is a server's URL
  (`qwenchat.remote`), connect to that server instead: nothing local is read or loaded then.
- `options_from_settings`: the generation options of layered settings (flags > env > config).
- `choose_start`: one rule for the chat app (`qwenchat -c`, `--cid`) and `qwenchat ask`
  (`-c`, `--cid`): a continued conversation runs on its own model unless `-m` names another,
  and with its own saved settings, over which only the options given on this command line win
  (not the config file's: those are the defaults of chats that saved none). A conversation
  held with a remote model is labelled `BASE_URL#MODEL_ID`, so continuing it reconnects to
  that server and model.

Nothing here imports torch until an engine is loaded.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwenchat.engine.records import GenerateOptions
from qwenchat.errors import UsageError

if TYPE_CHECKING:
    from qwenchat.config import Settings
    from qwenchat.engine import prefetch
    from qwenchat.engine.chat import ChatEngine
    from qwenchat.models import ResolvedModel
    from qwenchat.remote.engine import RemoteEngine
    from qwenchat.store import Store
    from qwenchat.store.records import Conversation


@dataclass(frozen=True)
class Start:
    conversation: "Conversation | None"  # the conversation to continue, if any
    model: str | None  # the model to load; None: the configured default

    @property
    def conversation_id(self) -> int | None:
        return self.conversation.id if self.conversation is not None else None


def choose_start(store: "Store", model_flag: str | None, cont: bool, cid: int | None,
                 *, need_one: bool = False) -> Start:
    """The conversation `-c` (the latest) or `--cid` names, and the model to run it on.
    need_one: `-c` with no conversation stored yet is a usage error (for `ask`); the app opens
    a new chat instead."""
    if cont and cid is not None:
        raise UsageError("--continue and --cid both given", "use one of them")
    conv = None
    if cid is not None:
        conv = store.get_conversation(cid)  # StoreError naming the id if there is none
    elif cont:
        conv = store.latest_conversation()
        if conv is None and need_one:
            raise UsageError("there is no conversation to continue yet", 'start one: qwenchat ask "..."')
    return Start(conv, model_flag or (conv.model if conv is not None else None))


def flag_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The generation options given on this command line, by option name."""
    from qwenchat.config import GENERATION_KEYS, OPTION_NAMES

    return {OPTION_NAMES.get(k, k): flags[k] for k in GENERATION_KEYS if flags.get(k) is not None}


def options_from_settings(settings: "Settings", stop: tuple[str, ...] = ()) -> GenerateOptions:
    """Generation options from layered settings (flags > env > config file); unset fields
    fall back to the model's generation_config.json inside the engine."""
    return GenerateOptions(**flag_overrides(settings.as_dict()), stop=stop)


def load_engine(
    settings: "Settings", progress: Any = None, resolved: "ResolvedModel | None" = None
) -> tuple["ChatEngine | RemoteEngine", str]:
    """Find (downloading if needed) the model the settings name and load it; `resolved` skips
    the finding when the caller has done it already (to show a download before a spinner).
    A model named by a server's URL is connected to instead (`resolved` does not apply).

    Returns the engine and the model's name as shown to users and stored with conversations.
    """
    from qwenchat.remote.reference import is_remote

    if is_remote(settings.model):
        return connect_remote(settings)
    from qwenchat.engine import prefetch
    from qwenchat.models import resolve_model
    from qwenchat.paths import int8_cache_dir, kernels_dir

    resolved = resolved or resolve_model(settings.model, progress=progress)
    ahead = _read_ahead(settings, resolved.path)  # before torch is imported: it reads meanwhile
    try:
        from qwenchat.engine.chat import ChatEngine

        _freeze_imports()
        engine = ChatEngine.load(
            resolved.path, device=settings.device, dtype=settings.dtype, max_context=settings.context_limit,
            quantize=settings.quantize, kernel_dir=kernels_dir(), int8_cache_dir=int8_cache_dir(),
            kv_pool_bytes=settings.kv_budget,
        )
    finally:
        if ahead is not None:
            prefetch.discard(ahead)  # frees it if the engine chose other weights (or failed)
    return engine, resolved.name


def _freeze_imports() -> None:
    """Leave what the imports made (~195k objects once torch is in: its modules, functions and
    classes, which live as long as the process) out of the garbage collector's full passes, once
    per process. Why: a full pass visits every tracked object; in the chat app it took 140-180 ms
    (233k objects), on the UI thread, about every 15 s of a streaming reply: a frozen screen and
    a stalled decode step each time. Frozen, a pass visits what came after (the model's own
    objects are not frozen, so a model switched away from is freed as before). No collection
    first: it would cost ~75 ms before the first token, for ~1k unreachable objects."""
    if gc.get_freeze_count() == 0:
        gc.freeze()


def connect_remote(settings: "Settings") -> tuple["RemoteEngine", str]:
    """Connect to the server `settings.model` names, with the key of `settings.api_key` (the
    flag or the config file; else the environment's). The label names the model the server
    serves even when the URL left it out, so a continued conversation gets the same one."""
    from dataclasses import replace

    from qwenchat.remote.engine import RemoteEngine
    from qwenchat.remote.reference import RemoteRef, api_key

    ref = RemoteRef.parse(settings.model or "")
    timeout = {} if settings.request_timeout is None else {"first_token_timeout_s": settings.request_timeout}
    engine = RemoteEngine.connect(ref, api_key(settings.api_key), **timeout)
    return engine, replace(ref, model=engine.info.name).label


def _read_ahead(settings: "Settings", model_dir: Path) -> "prefetch.Prefetch | None":
    """Start reading the model's weight cache on another core while torch is imported (a third
    of a second of a cold start), when the engine will most likely use it (`_cached_mode`). A
    wrong guess costs only that background read."""
    from qwenchat.engine import prefetch

    path = _weight_cache(settings, model_dir)
    if path is None or not path.is_file():
        return None
    return prefetch.start(path)


def _cached_mode(settings: "Settings") -> str | None:
    """"int8" or "int4" when the load will most likely use (or first write) that weight cache:
    the mode asked for (any device), or int8 left to the engine on a CPU-only machine with the
    dtype left to it too (the rules of engine/device.py's choose_quantize); else None."""
    quantize = (settings.quantize or "auto").strip().lower()
    if quantize in ("int8", "int4"):
        return quantize
    device = (settings.device or "auto").strip().lower()
    dtype = (settings.dtype or "auto").strip().lower()
    on_cpu = device == "cpu" or (device == "auto" and not _gpu_likely())
    return "int8" if quantize == "auto" and on_cpu and dtype == "auto" else None


def _weight_cache(settings: "Settings", model_dir: Path) -> Path | None:
    """Where the quantized weights of `model_dir` are kept for the load `settings` ask for, or
    None when it uses none."""
    from qwenchat.engine import prefetch
    from qwenchat.paths import int8_cache_dir

    mode = _cached_mode(settings)
    if mode is None:
        return None
    path = prefetch.int8_cache_path(int8_cache_dir(), model_dir)
    return path.with_name(prefetch.INT4_CACHE_FILE) if mode == "int4" else path


def conversion_note(settings: "Settings", model_dir: Path) -> str | None:
    """What to say while a load converts the weights first (no cache of them yet: ~15-20 s for a
    0.5B model on 2 cores, once; the default on a CPU is int8), or None."""
    path = _weight_cache(settings, model_dir)
    if path is None or path.is_file():
        return None
    return f"converting the weights to {_cached_mode(settings)} (once: later starts reuse them)"


def find_local(settings: "Settings", progress: Any = None) -> tuple["ResolvedModel", str | None]:
    """The local model `settings` name, found (downloaded if needed) before the load begins, so a
    face can show the download and then say what the load will do besides loading
    (`conversion_note`); pass the first to `load_engine(resolved=...)`."""
    from qwenchat.models import resolve_model

    resolved = resolve_model(settings.model, progress=progress)
    return resolved, conversion_note(settings, resolved.path)


def _gpu_likely() -> bool:
    """Whether torch will probably find a GPU (CUDA, ROCm or Apple's), guessed without torch."""
    return sys.platform == "darwin" or any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd"))
