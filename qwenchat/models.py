"""Model names -> local HF-format model directories; listing and removing what is on disk.

A name is one of: a catalog alias (`qwen2.5-0.5b-instruct`), a Hub repo id (`owner/name`,
optionally `@revision`), a local directory holding config.json, a `.gguf` file (converted once
into `paths.imported_models_dir()` and reused while the file's size and mtime are unchanged), or
the name of a model imported earlier with `qwenchat import`. `None` means the default model.

Hub models come from the standard HF cache (see `qwenchat.hub`); a complete cached snapshot is
used without any network call. This module never imports torch; the GGUF importer is imported
only when a .gguf file must be converted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from qwenchat import catalog, hub, paths
from qwenchat.errors import HubError, UsageError
from qwenchat.hub import DownloadProgress

Source = Literal["alias", "hub", "local", "gguf"]
IMPORT_MARKER = "qwenchat_import.json"


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # an HF-format model directory
    name: str  # as shown to users
    repo_id: str | None
    revision: str | None  # the resolved commit (Hub models)
    source: Source


@dataclass(frozen=True)
class ModelEntry:
    """One row of `qwenchat models`."""

    name: str
    repo_id: str | None
    source: Literal["alias", "hub", "gguf", "folder", "file"]  # gguf: imported; folder, file: the default's path
    downloaded: bool
    offline: bool  # usable without the network
    size: int | None  # bytes on disk
    path: Path | None
    default: bool = False
    description: str = ""


@dataclass(frozen=True)
class Removal:
    """What `qwenchat rm NAME` would delete."""

    name: str
    kind: Literal["hub", "imported"]
    repo_id: str | None
    path: Path
    size: int


# --------------------------------------------------------------------------- resolving


def default_model_name() -> str:
    """QWENCHAT_MODEL, else the config file's `model`, else the catalog default."""
    env = os.environ.get("QWENCHAT_MODEL", "").strip()
    if env:
        return env
    return _configured_model() or catalog.DEFAULT_ALIAS


def _configured_model() -> str | None:
    # The single call site for the config file's `model` key (qwenchat.config, another module).
    try:
        from qwenchat.config import load_settings
    except ImportError:
        return None
    value = getattr(load_settings(), "model", None)
    return str(value).strip() or None if value else None


def name_kind(name: str) -> str | None:
    """What a model name means, from its text and the disk alone (no network): "gguf" (a .gguf
    file), "local" (a folder), "alias" (the catalog's), "imported" (a GGUF imported before),
    "hub" (a Hub repo id, maybe not downloaded); None when it names nothing."""
    candidate = paths.user_path(name)
    if name.lower().endswith(".gguf") or candidate.is_file():
        return "gguf"
    if candidate.is_dir():
        return "local"
    if catalog.lookup(name.partition("@")[0]) is not None:
        return "alias"
    if _imported_dir(name) is not None:
        return "imported"
    if "/" in name and not _looks_like_path(name):
        return "hub"
    return None


def _looks_like_path(name: str) -> bool:
    """Text that can only mean a file or folder (never an alias or a Hub id)."""
    return name.startswith((".", "/", "~"))


def check_name(name: str | None) -> None:
    """The error `resolve_model` would give for a name that means no model, or a path that holds
    none, without its slow work (a command that starts other things first says it before them)."""
    name = (name or "").strip() or default_model_name()
    kind = name_kind(name)
    if kind is None:
        raise _unknown(name)
    if kind == "local":
        _check_local(paths.user_path(name))
    elif kind == "gguf":
        _check_gguf(paths.user_path(name))


def resolve_model(name: str | None, *, download: bool = True,
                  progress: DownloadProgress | None = None) -> ResolvedModel:
    """Turn a model name into a local HF-format directory, downloading or importing if needed."""
    name = (name or "").strip() or default_model_name()
    kind = name_kind(name)
    if kind == "gguf":
        return _resolve_gguf(paths.user_path(name), progress)
    if kind == "local":
        return _resolve_local(paths.user_path(name))
    if kind == "alias":
        alias, _, alias_rev = name.partition("@")
        entry = catalog.lookup(alias)
        shown = f"{entry.alias}@{alias_rev}" if alias_rev else entry.alias
        snap = hub.ensure_snapshot(entry.repo_id, alias_rev or None, download=download, progress=progress,
                                   display_name=shown)
        return ResolvedModel(snap.path, shown, entry.repo_id, snap.commit, "alias")
    if kind == "imported":
        return ResolvedModel(_imported_dir(name), name, None, None, "gguf")
    if kind == "hub":
        repo_id, revision = hub.parse_repo_ref(name)
        snap = hub.ensure_snapshot(repo_id, revision, download=download, progress=progress, display_name=name)
        return ResolvedModel(snap.path, name, repo_id, snap.commit, "hub")
    raise _unknown(name)


def repo_ref(name: str) -> tuple[str, str | None, str] | None:
    """(repo_id, revision, display name) when `name` means a Hub model (alias or repo id)."""
    kind = name_kind(name)
    if kind == "alias":
        alias, _, rev = name.partition("@")
        entry = catalog.lookup(alias)
        return entry.repo_id, rev or None, f"{entry.alias}@{rev}" if rev else entry.alias
    if kind == "hub":
        repo_id, revision = hub.parse_repo_ref(name)
        return repo_id, revision, name
    return None


def _unknown(name: str) -> HubError:
    if _looks_like_path(name):  # a path, not a name: say so (found hands-on)
        return HubError(f"{name} does not exist (no such file or folder)",
                        hint="check the path; a model folder holds config.json, or give a .gguf file")
    close = catalog.suggest(name, extra=[p.name for p in _imported_dirs()])
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    hint += "`qwenchat models` lists the aliases; a Hub repo is owner/name; a path must exist"
    return HubError(f"unknown model '{name}'", hint=hint)


def _check_local(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise HubError(f"{folder} has no config.json, so it is not a Hugging Face model directory",
                       hint="point at the folder that holds config.json, tokenizer.json and *.safetensors")


def _check_gguf(file: Path) -> None:
    if not file.is_file():
        raise HubError(f"GGUF file {file} does not exist", hint="check the path")


def _resolve_local(folder: Path) -> ResolvedModel:
    _check_local(folder)
    return ResolvedModel(folder.resolve(), str(folder), None, None, "local")


def _resolve_gguf(file: Path, progress: DownloadProgress | None = None) -> ResolvedModel:
    _check_gguf(file)
    file = file.resolve()
    # The converter is imported only here: a .gguf name is the one case that may need it.
    from qwenchat.engine.gguf import import_gguf, import_is_current

    out = paths.imported_models_dir() / _slug(file.stem)
    for folder in [out] + [d for d in _imported_dirs() if d != out]:
        if import_is_current(file, folder):  # same file, size and mtime: reuse the conversion
            return ResolvedModel(folder, folder.name, None, None, "gguf")
    folder = Path(import_gguf(file, out, dtype="float32", progress=_converting(progress, file.name)))
    return ResolvedModel(folder, folder.name, None, None, "gguf")


def _converting(progress: DownloadProgress | None, name: str) -> Callable[[int, int], None] | None:
    """The import's (done, total) bytes for a progress that shows conversions (`on_convert`,
    optional like `on_note`): the chat app draws them as it draws a download."""
    on_convert = getattr(progress, "on_convert", None)
    if not callable(on_convert):
        return None
    return lambda done, total: on_convert(name, done, total)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower() or "model"


def _imported_dirs() -> list[Path]:
    root = paths.imported_models_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file())


def _imported_dir(name: str) -> Path | None:
    if "/" in name or name.startswith("."):
        return None
    folder = paths.imported_models_dir() / name
    return folder if (folder / "config.json").is_file() else None


# --------------------------------------------------------------------------- listing, removing


def list_models() -> list[ModelEntry]:
    """The aliases (downloaded or not), other cached Hub models, imported models, and the default
    model wherever it is (a folder, a .gguf file, a Hub model not downloaded yet)."""
    default = default_model_name()
    is_default = lambda name: _same_model(default, name)  # noqa: E731
    cached = {r.repo_id.lower(): r for r in hub.list_cached()}
    rows: list[ModelEntry] = []
    for entry in catalog.CATALOG.values():
        repo = cached.pop(entry.repo_id.lower(), None)
        rows.append(ModelEntry(
            entry.alias, entry.repo_id, "alias", downloaded=repo is not None,
            offline=bool(repo and repo.snapshot), size=repo.size_on_disk if repo else None,
            path=(repo.snapshot.path if repo and repo.snapshot else repo.path if repo else None),
            default=is_default(entry.alias) or is_default(entry.repo_id), description=entry.description,
        ))
    for repo in cached.values():
        rows.append(ModelEntry(
            repo.repo_id, repo.repo_id, "hub", downloaded=True, offline=repo.snapshot is not None,
            size=repo.size_on_disk, path=repo.snapshot.path if repo.snapshot else repo.path,
            default=is_default(repo.repo_id),
        ))
    for folder in _imported_dirs():
        data = _read_json(folder / IMPORT_MARKER) or {}
        rows.append(ModelEntry(
            folder.name, None, "gguf", downloaded=True, offline=True, size=_tree_size(folder),
            path=folder, default=is_default(folder.name), description=str(data.get("source", "imported")),
        ))
    if not any(row.default for row in rows):
        rows += [row for row in [_default_entry(default)] if row is not None]
    return rows


def _same_model(a: str, b: str) -> bool:
    """Whether two names mean one model: Hub ids are not case-sensitive, a revision is dropped."""
    return a.partition("@")[0].lower() == b.partition("@")[0].lower()


def _default_entry(name: str) -> ModelEntry | None:
    """The row of a default model that no alias, download or import stands for."""
    kind = name_kind(name)
    if kind == "hub":
        return ModelEntry(name, name.partition("@")[0], "hub", downloaded=False, offline=False, size=None,
                          path=None, default=True)
    if kind not in ("local", "gguf"):
        return None  # a name that means nothing: commands that use it say so
    path = paths.user_path(name)
    there = path.exists()
    size = (_tree_size(path) if path.is_dir() else path.stat().st_size) if there else None
    return ModelEntry(name, None, "folder" if kind == "local" else "file", downloaded=there, offline=there,
                      size=size, path=path if there else None, default=True,
                      description="folder" if kind == "local" else "GGUF file")


def plan_removal(name: str) -> Removal:
    """What removing `name` deletes; HubError if nothing of that name is on disk."""
    name = name.strip()
    imported = _imported_dir(name)
    ref = repo_ref(name) if imported is None else None
    if ref is not None:
        repo_id, _rev, display = ref
        path = hub.repo_cache_path(repo_id)
        if not path.exists():
            raise HubError(f"{display} is not downloaded; nothing to remove", hint="`qwenchat models` lists what is")
        size = next((r.size_on_disk for r in hub.list_cached() if r.repo_id == repo_id), 0)
        return Removal(display, "hub", repo_id, path, size)
    if imported is not None:
        return Removal(name, "imported", None, imported, _tree_size(imported))
    if paths.user_path(name).exists():
        raise UsageError(f"{name} is a path, not a model qwenchat manages",
                         hint="`qwenchat rm` removes downloaded and imported models only; delete files yourself")
    raise _unknown(name)


def remove(plan: Removal) -> int:
    """Carry out a removal; returns the bytes freed."""
    if plan.kind == "hub":
        assert plan.repo_id is not None
        return hub.delete_cached(plan.repo_id) or plan.size
    shutil.rmtree(plan.path)
    return plan.size


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
