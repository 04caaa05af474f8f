"""The Hugging Face cache as qwenchat sees it, with no network: where it is (HF_HOME,
HF_HUB_CACHE), repo ids, whether a snapshot is complete, listing and deleting cached repos."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from qwenchat.errors import HubError

DEFAULT_ENDPOINT = "https://huggingface.co"
CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"
REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------- environment


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """The HF hub cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def is_offline() -> bool:
    """HF_HUB_OFFLINE as it is now; huggingface_hub's import-time copy is kept in step."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    offline = value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = offline  # its HTTP client refuses every request while this is set
    except ImportError:  # pragma: no cover - a dependency
        pass
    return offline


def is_repo_id(text: str) -> bool:
    return bool(_REPO_RE.match(text))


def is_commit(text: str) -> bool:
    return bool(_COMMIT_RE.match(text))


def parse_repo_ref(text: str) -> tuple[str, str | None]:
    """`owner/name[@revision]` -> (repo_id, revision or None)."""
    repo, _, rev = text.strip().partition("@")
    if not is_repo_id(repo) or (_ and not rev):
        raise HubError(f"'{text}' is not a Hub repo id", hint="write it as owner/name, optionally @revision")
    return repo, rev or None


def repo_cache_path(repo_id: str) -> Path:
    return cache_dir() / ("models--" + repo_id.replace("/", "--"))


def ref_text(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class HubSnapshot:
    """A complete model snapshot in the HF cache."""

    repo_id: str
    revision: str | None  # as requested (None: the default branch)
    commit: str
    path: Path


@dataclass(frozen=True)
class CachedRepo:
    repo_id: str
    path: Path  # the repo folder in the cache
    size_on_disk: int
    snapshot: HubSnapshot | None  # the main (or newest complete) snapshot; None if none is complete


def snapshot_complete(folder: Path) -> bool:
    """Whether a snapshot folder holds a loadable model: config, tokenizer and every weight file."""
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    if (folder / SINGLE_WEIGHTS).is_file():
        return True
    index = folder / INDEX_FILE
    if not index.is_file():
        return False
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(shards) and all((folder / s).is_file() for s in shards)


def cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit repo@revision is pinned to in the cache (a commit names itself), or None."""
    rev = revision or "main"
    if is_commit(rev):
        return rev
    try:
        return (repo_cache_path(repo_id) / "refs" / rev).read_text().strip() or None
    except OSError:
        return None


def cached_snapshot(repo_id: str, revision: str | None = None) -> HubSnapshot | None:
    """The complete cached snapshot for repo@revision, found with no network call, or None."""
    commit = cached_commit(repo_id, revision)
    if commit is None:
        return None
    folder = repo_cache_path(repo_id) / "snapshots" / commit
    if folder.is_dir() and snapshot_complete(folder):
        return HubSnapshot(repo_id, revision, commit, folder)
    return None


def list_cached() -> list[CachedRepo]:
    """Every model repo in the HF cache, with its size and whether a complete snapshot exists."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        snap = cached_snapshot(repo.repo_id)
        if snap is None:  # no complete `main`: the newest complete revision, if any
            for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
                if snapshot_complete(Path(rev.snapshot_path)):
                    snap = HubSnapshot(repo.repo_id, rev.commit_hash, rev.commit_hash, Path(rev.snapshot_path))
                    break
        out.append(CachedRepo(repo.repo_id, Path(repo.repo_path), repo.size_on_disk, snap))
    return out


def delete_cached(repo_id: str) -> int:
    """Remove a repo from the HF cache; returns the bytes freed (0 if it was not there)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    path = repo_cache_path(repo_id)
    try:
        info = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return 0
    freed = 0
    for repo in info.repos:
        if repo.repo_type == "model" and repo.repo_id == repo_id:
            strategy = info.delete_revisions(*[r.commit_hash for r in repo.revisions])
            strategy.execute()
            freed = repo.size_on_disk
    if path.exists():  # leftovers: refs, blobs of interrupted downloads, a repo with no revision
        freed = freed or tree_size(path)
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(cache_dir() / ".locks" / path.name, ignore_errors=True)
    return freed


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
