"""Downloading Qwen2 models from the Hugging Face Hub into the standard HF cache, and finding
them there again without the network.

Contract: this module knows repo ids, revisions and the HF cache layout; it returns snapshot
directories (HF-format model folders) and never imports torch. Every failure a user can act on
becomes a `HubError` naming the problem and the fix; KeyboardInterrupt propagates untouched
(huggingface_hub downloads into a temporary `.incomplete` file that it deletes on failure, so an
interrupted download leaves nothing that could later be loaded as a model).

Environment, read at call time (huggingface_hub reads some of these once, at import):
HF_HOME / HF_HUB_CACHE (cache location), HF_ENDPOINT (mirrors), HF_TOKEN (gated repos),
HF_HUB_OFFLINE (never touch the network).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qwenchat.errors import HubError

DEFAULT_ENDPOINT = "https://huggingface.co"
CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"
# Fetched in this order: the config first (validated before any large file), weights last, so a
# snapshot holding its weights holds everything before them too.
REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
METADATA_ORDER = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "chat_template.jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
DISK_MARGIN_BYTES = 64 * 1024 * 1024
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------- progress


class DownloadProgress(Protocol):
    """What a UI implements to show a download. Called from the downloading thread."""

    def on_start(self, repo_id: str, files: Sequence[tuple[str, int]], total_bytes: int) -> None:
        """Before the first byte: the files still to fetch (name, size) and their total."""

    def on_bytes(self, filename: str, file_done: int, file_total: int, done: int, total: int) -> None:
        """Bytes received so far, for the current file and overall."""

    def on_finish(self) -> None:
        """Every file is in the cache (or the download failed; also called then)."""


class NullProgress:
    """A DownloadProgress that shows nothing; subclass it to override only what you need."""

    def on_start(self, repo_id: str, files: Sequence[tuple[str, int]], total_bytes: int) -> None:
        pass

    def on_bytes(self, filename: str, file_done: int, file_total: int, done: int, total: int) -> None:
        pass

    def on_finish(self) -> None:
        pass


class _Tally:
    """Overall byte counts across files, feeding a DownloadProgress."""

    def __init__(self, progress: DownloadProgress, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def bar_class(self, filename: str, size: int) -> type:
        """A tqdm-compatible class for `hf_hub_download(tqdm_class=...)`, reporting to us."""
        tally = self

        class _Bar:
            def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kw: Any) -> None:
                self.total = total or size
                self.n = 0
                self.update(initial)

            def update(self, n: int | float | None = 1) -> None:
                n = int(n or 0)
                self.n += n
                tally.done += n
                tally.progress.on_bytes(filename, self.n, self.total or 0, tally.done, tally.total)

            def update_transfer(self, n: int) -> None:  # Xet transfer bytes: counted by update()
                pass

            def set_postfix_str(self, *a: Any, **k: Any) -> None:
                pass

            set_transfer_postfix_str = set_description = refresh = set_postfix_str

            def close(self) -> None:
                pass

            def __enter__(self) -> _Bar:
                return self

            def __exit__(self, *exc: Any) -> None:
                pass

        return _Bar


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


def parse_repo_ref(text: str) -> tuple[str, str | None]:
    """`owner/name[@revision]` -> (repo_id, revision or None)."""
    repo, _, rev = text.strip().partition("@")
    if not is_repo_id(repo) or (_ and not rev):
        raise HubError(f"'{text}' is not a Hub repo id", hint="write it as owner/name, optionally @revision")
    return repo, rev or None


def repo_cache_path(repo_id: str) -> Path:
    return cache_dir() / ("models--" + repo_id.replace("/", "--"))


# --------------------------------------------------------------------------- the cache


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


def cached_snapshot(repo_id: str, revision: str | None = None) -> HubSnapshot | None:
    """The complete cached snapshot for repo@revision, found with no network call, or None."""
    repo_dir = repo_cache_path(repo_id)
    rev = revision or "main"
    if _COMMIT_RE.match(rev):
        commit = rev
    else:
        ref = repo_dir / "refs" / rev
        try:
            commit = ref.read_text().strip()
        except OSError:
            return None
    folder = repo_dir / "snapshots" / commit
    if commit and folder.is_dir() and snapshot_complete(folder):
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
        freed = freed or _tree_size(path)
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(cache_dir() / ".locks" / path.name, ignore_errors=True)
    return freed


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None  # LFS files: the content sha256 (the Hub's etag)
    blob_id: str | None  # git blob sha1 (small files)


def ensure_snapshot(repo_id: str, revision: str | None = None, *, download: bool = True,
                    progress: DownloadProgress | None = None, display_name: str | None = None) -> HubSnapshot:
    """The cached snapshot if complete (no network), else download it (unless `download` is False)."""
    snap = cached_snapshot(repo_id, revision)
    if snap is not None:
        return snap
    name = display_name or _ref(repo_id, revision)
    if not download:
        raise HubError(f"model {name} is not downloaded", hint=f"run `qwenchat pull {name}` first")
    return download_snapshot(repo_id, revision, progress=progress, display_name=display_name)


def download_snapshot(repo_id: str, revision: str | None = None, *, progress: DownloadProgress | None = None,
                      display_name: str | None = None) -> HubSnapshot:
    """Ask the Hub for repo@revision and fetch what the cache lacks; pins the resolved commit."""
    name = display_name or _ref(repo_id, revision)
    if is_offline():
        snap = cached_snapshot(repo_id, revision)
        if snap is not None:
            return snap
        ref = _ref(repo_id, revision)
        shown = name if name == ref else f"{name} ({ref})"  # an alias also names its repo
        raise HubError(
            f"model {shown} is not in the local cache and HF_HUB_OFFLINE is set",
            hint=f"run `qwenchat pull {name}` on a connected machine (or unset HF_HUB_OFFLINE)",
        )
    from huggingface_hub import HfApi

    progress = progress or NullProgress()
    with _hub_errors(repo_id, revision, name):
        info = HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision, files_metadata=True)
    commit = info.sha
    if not commit:
        raise HubError(f"the Hub gave no commit for {_ref(repo_id, revision)}",
                       hint=f"check that HF_ENDPOINT ({endpoint()}) is a Hugging Face Hub mirror")
    files = plan_files(repo_id, info.siblings or [])
    folder = repo_cache_path(repo_id) / "snapshots" / commit

    try:
        # The config first, validated before anything large is fetched.
        with _hub_errors(repo_id, revision, name):
            _fetch(repo_id, commit, files[0], _Tally(NullProgress(), 0))
        check_model_type(repo_id, folder / CONFIG_FILE)
        rest = files[1:]
        missing = [f for f in rest if not (folder / f.name).is_file()]
        check_disk_space(sum(f.size for f in missing if not _blob_cached(repo_id, f)), cache_dir())
        tally = _Tally(progress, sum(f.size for f in missing))
        progress.on_start(repo_id, [(f.name, f.size) for f in missing], tally.total)
        with _hub_errors(repo_id, revision, name):
            for f in rest:
                _fetch(repo_id, commit, f, tally)
                if f.name == INDEX_FILE:  # shards come from the index's weight map
                    _check_shards_listed(repo_id, folder / INDEX_FILE, rest)
    finally:
        progress.on_finish()
    _pin(repo_id, revision or "main", commit)
    if not snapshot_complete(folder):
        raise HubError(f"the download of {name} is incomplete", hint=f"run `qwenchat pull {name}` again")
    return HubSnapshot(repo_id, revision, commit, folder)


def plan_files(repo_id: str, siblings: Sequence[Any]) -> list[RemoteFile]:
    """The files qwenchat needs from a repo listing, in download order; refuses unusable repos."""
    by_name = {s.rfilename: s for s in siblings}
    names = set(by_name)
    if CONFIG_FILE not in names:
        ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
        hint = (f"it holds GGUF files ({ggufs[0]}...): download one and run `qwenchat import FILE`"
                if ggufs else "pick a transformers-format Qwen2 repo (config.json + safetensors)")
        raise HubError(f"{repo_id} has no config.json, so it is not a transformers model repo", hint=hint)
    if SINGLE_WEIGHTS in names:
        weights = [SINGLE_WEIGHTS]
    elif INDEX_FILE in names:
        weights = [INDEX_FILE] + sorted(n for n in names if re.fullmatch(r"model-\d+-of-\d+\.safetensors", n))
    else:
        pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise HubError(
                f"{repo_id} ships only PyTorch pickle weights ({', '.join(pickles[:3])}), no safetensors",
                hint="qwenchat loads safetensors only (pickles can run code when loaded); "
                     "pick a repo that has model.safetensors",
            )
        raise HubError(f"{repo_id} has no model.safetensors or model.safetensors.index.json",
                       hint="pick a transformers-format Qwen2 repo with safetensors weights")
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise HubError(f"{repo_id} lacks {', '.join(missing)}", hint="qwenchat needs the repo's tokenizer files")
    wanted = [n for n in METADATA_ORDER if n in names] + weights
    return [_remote(by_name[n]) for n in wanted]


def _remote(sibling: Any) -> RemoteFile:
    lfs = getattr(sibling, "lfs", None)
    sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
    size = (getattr(lfs, "size", None) if lfs else None) or sibling.size or 0
    return RemoteFile(sibling.rfilename, int(size), sha, getattr(sibling, "blob_id", None))


def check_model_type(repo_id: str, config_path: Path) -> None:
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise HubError(f"config.json of {repo_id} cannot be read: {e}",
                       hint="the repo is not a transformers model, or the download is damaged") from None
    if model_type != "qwen2":
        raise HubError(
            f"{repo_id} is a '{model_type}' model; qwenchat runs Qwen2-architecture models only "
            "(model_type qwen2)",
            hint="pick a Qwen2 or Qwen2.5 repo, e.g. Qwen/Qwen2.5-0.5B-Instruct (see `qwenchat models`)",
        )


def _check_shards_listed(repo_id: str, index: Path, files: Sequence[RemoteFile]) -> None:
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise HubError(f"{INDEX_FILE} of {repo_id} is not a valid safetensors index") from None
    absent = sorted(shards - {f.name for f in files})
    if absent:
        raise HubError(f"{repo_id} lists shards it does not contain: {', '.join(absent[:3])}")


def check_disk_space(needed: int, where: Path) -> None:
    """Refuse to start when the cache's disk lacks `needed` bytes plus a margin."""
    if needed <= 0:
        return
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = max(DISK_MARGIN_BYTES, needed // 50)
    if free < needed + margin:
        raise HubError(
            f"not enough disk space in {where}: the download needs {human_size(needed)} "
            f"(plus {human_size(margin)} to spare) but only {human_size(free)} is free",
            hint="free some space, or point HF_HOME / HF_HUB_CACHE at a larger disk",
        )


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _blob_cached(repo_id: str, f: RemoteFile) -> bool:
    etag = f.sha256 or f.blob_id
    return bool(etag) and (repo_cache_path(repo_id) / "blobs" / etag).is_file()


def _fetch(repo_id: str, commit: str, f: RemoteFile, tally: _Tally) -> Path:
    """One file into the cache at `commit`, verified against the Hub's hash when newly fetched."""
    from huggingface_hub import hf_hub_download

    pointer = repo_cache_path(repo_id) / "snapshots" / commit / f.name
    if pointer.is_file():
        return pointer
    path = Path(hf_hub_download(
        repo_id, f.name, revision=commit, cache_dir=str(cache_dir()), endpoint=endpoint(),
        tqdm_class=tally.bar_class(f.name, f.size),
    ))
    _verify(repo_id, f, path)
    return path


def _verify(repo_id: str, f: RemoteFile, path: Path) -> None:
    if f.sha256:
        expected, got, kind = f.sha256, _sha256(path), "sha256"
    elif f.blob_id:
        expected, got, kind = f.blob_id, _git_sha1(path), "git sha1"
    else:
        return
    if got == expected:
        return
    blob = Path(os.path.realpath(path))
    for p in {path, blob}:
        try:
            p.unlink()
        except OSError:
            pass
    raise HubError(
        f"{f.name} downloaded from {repo_id} is corrupt: its {kind} is {got[:12]}..., the Hub says "
        f"{expected[:12]}...; the bad file was removed",
        hint="run the command again; if it keeps failing, the network or mirror (HF_ENDPOINT) alters data",
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pin(repo_id: str, revision: str, commit: str) -> None:
    """Record revision -> commit in the snapshot refs, so offline runs find this snapshot."""
    if revision == commit:
        return
    ref = repo_cache_path(repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)


def _ref(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, name: str) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into HubErrors; KeyboardInterrupt passes."""
    import httpx2
    from huggingface_hub.errors import (
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ref, ep = _ref(repo_id, revision), endpoint()
    offline_hint = "check your connection; models already downloaded work offline with HF_HUB_OFFLINE=1"
    try:
        yield
    except GatedRepoError:
        raise HubError(
            f"{repo_id} is a gated repo: downloading it needs a Hugging Face token and the accepted license",
            hint=f"accept the license on {ep}/{repo_id}, then set HF_TOKEN or run `hf auth login`",
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"model repo {repo_id} was not found on {ep}",
            hint="check the spelling (owner/name); a private repo needs HF_TOKEN or `hf auth login`",
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"revision '{revision}' was not found in {repo_id}",
                       hint="use a branch, tag or commit that exists in the repo") from None
    except RemoteEntryNotFoundError as e:
        raise HubError(f"a file listed for {ref} is missing on the Hub: {e.response.url}",
                       hint="the repo changed during the download; run the command again") from None
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, FileMetadataError):
        raise HubError(f"cannot download {name}: the Hub at {ep} is not reachable", hint=offline_hint) from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        if status in (401, 403):
            raise HubError(
                f"the Hub refused access to {repo_id} (HTTP {status})",
                hint=f"set HF_TOKEN or run `hf auth login`, and accept the license on {ep}/{repo_id}",
            ) from None
        if status >= 500:
            raise HubError(f"the Hub at {ep} failed with a server error (HTTP {status}) for {ref}",
                           hint="try again later; " + offline_hint) from None
        raise HubError(f"the Hub at {ep} answered HTTP {status} for {ref}", hint=offline_hint) from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as e:
        raise HubError(f"cannot download {name}: network error talking to {ep} ({type(e).__name__})",
                       hint=offline_hint) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise HubError(f"the disk holding {cache_dir()} filled up while downloading {name}",
                           hint="free some space, or point HF_HOME / HF_HUB_CACHE at a larger disk") from None
        if "Consistency check failed" in str(e):
            raise HubError(f"the download of {name} was cut short", hint=f"run `qwenchat pull {name}` again") from None
        raise
