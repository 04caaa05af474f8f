"""Fetching a model snapshot from the Hub into the HF cache, every file checked on arrival.

The config comes first and is validated before anything large is fetched; the weights come
last, so a snapshot holding its weights holds everything before them too. huggingface_hub
downloads into a temporary `.incomplete` file that it deletes on failure, so an interrupted
download leaves nothing that could later be loaded as a model. `verify_cached=True` (what
`qwenchat pull` asks for) also re-checks the files already in the cache and fetches a damaged
one again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwenchat.errors import HubError
from qwenchat.hub.cache import (
    CONFIG_FILE,
    INDEX_FILE,
    REQUIRED_FILES,
    SINGLE_WEIGHTS,
    HubSnapshot,
    cache_dir,
    cached_snapshot,
    endpoint,
    is_offline,
    ref_text,
    repo_cache_path,
    snapshot_complete,
)
from qwenchat.hub.failures import hub_errors
from qwenchat.hub.progress import DownloadProgress, NullProgress, Tally, note
from qwenchat.hub.verify import RemoteFile, check_file, corrupt_error, remote_file, remove_cached

METADATA_ORDER = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "chat_template.jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
DISK_MARGIN_BYTES = 64 * 1024 * 1024


def ensure_snapshot(repo_id: str, revision: str | None = None, *, download: bool = True,
                    progress: DownloadProgress | None = None, display_name: str | None = None) -> HubSnapshot:
    """The cached snapshot if complete (no network), else download it (unless `download` is False)."""
    snap = cached_snapshot(repo_id, revision)
    if snap is not None:
        return snap
    name = display_name or ref_text(repo_id, revision)
    if not download:
        raise HubError(f"model {name} is not downloaded", hint=f"run `qwenchat pull {name}` first")
    return download_snapshot(repo_id, revision, progress=progress, display_name=display_name)


def download_snapshot(repo_id: str, revision: str | None = None, *, progress: DownloadProgress | None = None,
                      display_name: str | None = None, verify_cached: bool = False) -> HubSnapshot:
    """Ask the Hub for repo@revision and fetch what the cache lacks; pins the resolved commit.
    With `verify_cached`, files already cached are checked too and a damaged one is fetched again."""
    name = display_name or ref_text(repo_id, revision)
    progress = progress or NullProgress()
    if is_offline():
        return _offline_snapshot(repo_id, revision, name, progress, verify_cached)
    from huggingface_hub import HfApi

    with hub_errors(repo_id, revision, name):
        info = HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision, files_metadata=True)
    commit = info.sha
    if not commit:
        raise HubError(f"the Hub gave no commit for {ref_text(repo_id, revision)}",
                       hint=f"check that HF_ENDPOINT ({endpoint()}) is a Hugging Face Hub mirror")
    files = plan_files(repo_id, info.siblings or [])
    folder = repo_cache_path(repo_id) / "snapshots" / commit
    if verify_cached:
        _repair(repo_id, folder, files, progress)
    try:
        # The config first, validated before anything large is fetched.
        with hub_errors(repo_id, revision, name):
            _fetch(repo_id, commit, files[0], Tally(NullProgress(), 0), progress)
        check_model_type(repo_id, folder / CONFIG_FILE)
        rest = files[1:]
        missing = [f for f in rest if not (folder / f.name).is_file()]
        check_disk_space(sum(f.size for f in missing if not _blob_cached(repo_id, f)), cache_dir())
        tally = Tally(progress, sum(f.size for f in missing))
        progress.on_start(repo_id, [(f.name, f.size) for f in missing], tally.total)
        with hub_errors(repo_id, revision, name):
            for f in rest:
                _fetch(repo_id, commit, f, tally, progress)
                if f.name == INDEX_FILE:  # shards come from the index's weight map
                    _check_shards_listed(repo_id, folder / INDEX_FILE, rest)
    finally:
        progress.on_finish()
    _pin(repo_id, revision or "main", commit)
    if not snapshot_complete(folder):
        raise HubError(f"the download of {name} is incomplete", hint=f"run `qwenchat pull {name}` again")
    return HubSnapshot(repo_id, revision, commit, folder)


def _offline_snapshot(repo_id: str, revision: str | None, name: str, progress: DownloadProgress,
                      verify_cached: bool) -> HubSnapshot:
    snap = cached_snapshot(repo_id, revision)
    if snap is None:
        ref = ref_text(repo_id, revision)
        shown = name if name == ref else f"{name} ({ref})"  # an alias also names its repo
        raise HubError(
            f"model {shown} is not in the local cache and HF_HUB_OFFLINE is set",
            hint=f"run `qwenchat pull {name}` on a connected machine (or unset HF_HUB_OFFLINE)",
        )
    if verify_cached:  # no listing offline: each file is checked against its ETag
        files = [RemoteFile(p.name, 0, None, None) for p in sorted(snap.path.iterdir()) if p.is_file()]
        damaged = _repair(repo_id, snap.path, files, progress)
        if damaged:
            raise HubError(f"{', '.join(damaged)} of {name} was damaged and has been removed; "
                           "it cannot be downloaded again while HF_HUB_OFFLINE is set",
                           hint=f"unset HF_HUB_OFFLINE and run `qwenchat pull {name}`")
    return snap


def _repair(repo_id: str, folder: Path, files: Sequence[RemoteFile], progress: DownloadProgress) -> list[str]:
    """Check the files already in the snapshot; remove each damaged one (so it is fetched again)."""
    damaged = []
    for f in files:
        path = folder / f.name
        if not path.is_file():
            continue
        check = check_file(f, path)
        if check.expected is None:
            note(progress, f"{f.name} of {repo_id} cannot be checked: the Hub gave no hash for it")
        elif not check.ok:
            assert check.actual is not None
            remove_cached(path)
            damaged.append(f.name)
            note(progress, f"{f.name} of {repo_id} in the cache is damaged (its {check.expected.kind} is "
                           f"{check.actual[:12]}..., expected {check.expected.value[:12]}...); "
                           "removed, downloading it again")
    return damaged


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
    return [remote_file(by_name[n]) for n in wanted]


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
    etag = f.sha256 or (None if f.lfs else f.blob_id)
    return bool(etag) and (repo_cache_path(repo_id) / "blobs" / etag).is_file()


def _fetch(repo_id: str, commit: str, f: RemoteFile, tally: Tally, progress: DownloadProgress) -> Path:
    """One file into the cache at `commit`, checked against the Hub's hash when newly fetched."""
    from huggingface_hub import hf_hub_download

    pointer = repo_cache_path(repo_id) / "snapshots" / commit / f.name
    if pointer.is_file():
        return pointer
    path = Path(hf_hub_download(
        repo_id, f.name, revision=commit, cache_dir=str(cache_dir()), endpoint=endpoint(),
        tqdm_class=tally.bar_class(f.name, f.size),
    ))
    check = check_file(f, path)
    if check.expected is None:
        note(progress, f"{f.name} of {repo_id} was downloaded but cannot be checked: "
                       "the Hub gave no sha256 or ETag hash for it")
    elif not check.ok:
        remove_cached(path)
        raise corrupt_error(repo_id, check)
    return path


def _pin(repo_id: str, revision: str, commit: str) -> None:
    """Record revision -> commit in the snapshot refs, so offline runs find this snapshot."""
    if revision == commit:
        return
    ref = repo_cache_path(repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)
