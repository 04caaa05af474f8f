"""Downloading Qwen2 models from the Hugging Face Hub into the standard HF cache, and finding
them there again without the network.

Contract: this package knows repo ids, revisions and the HF cache layout; it returns snapshot
directories (HF-format model folders) and never imports torch. Every failure a user can act on
becomes a `HubError` naming the problem and the fix; KeyboardInterrupt propagates untouched.
No file becomes part of a snapshot unchecked: each is hashed against the Hub's listing or, when
the listing has no hash, the download's ETag (see `verify`).

Modules: `cache` (where the cache is, snapshots, listing, deleting; no network), `download`
(fetching a snapshot), `verify` (hashes), `failures` (huggingface_hub errors -> HubError),
`progress` (the DownloadProgress protocol a UI implements).

Environment, read at call time (huggingface_hub reads some of these once, at import):
HF_HOME / HF_HUB_CACHE (cache location), HF_ENDPOINT (mirrors), HF_TOKEN (gated repos),
HF_HUB_OFFLINE (never touch the network).
"""

from __future__ import annotations

import shutil  # noqa: F401  (tests patch hub.shutil.disk_usage)

from qwenchat.hub.cache import (
    CONFIG_FILE,
    DEFAULT_ENDPOINT,
    INDEX_FILE,
    REQUIRED_FILES,
    SINGLE_WEIGHTS,
    CachedRepo,
    HubSnapshot,
    cache_dir,
    cached_snapshot,
    delete_cached,
    endpoint,
    is_offline,
    is_repo_id,
    list_cached,
    parse_repo_ref,
    repo_cache_path,
    snapshot_complete,
)
from qwenchat.hub.download import (
    check_disk_space,
    check_model_type,
    download_snapshot,
    ensure_snapshot,
    human_size,
    plan_files,
)
from qwenchat.hub.progress import DownloadProgress, NullProgress
from qwenchat.hub.verify import RemoteFile

__all__ = [
    "CONFIG_FILE", "DEFAULT_ENDPOINT", "INDEX_FILE", "REQUIRED_FILES", "SINGLE_WEIGHTS",
    "CachedRepo", "DownloadProgress", "HubSnapshot", "NullProgress", "RemoteFile",
    "cache_dir", "cached_snapshot", "check_disk_space", "check_model_type", "delete_cached",
    "download_snapshot", "endpoint", "ensure_snapshot", "human_size", "is_offline", "is_repo_id",
    "list_cached", "parse_repo_ref", "plan_files", "repo_cache_path", "snapshot_complete",
]
