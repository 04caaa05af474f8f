"""Checking files in the HF cache against the Hub's hashes, so that a corrupt download or a
damaged cached file never passes for the model.

The expected hash of a file comes from the Hub's file listing when it carries one (the sha256 of
an LFS file, the git blob sha1 of a small file); otherwise from the download's ETag, which
huggingface_hub stores as the blob's file name (`blobs/<etag>`) and which the Hub sets to the LFS
sha256 (or, for a small file, its git blob sha1). A file with neither cannot be checked: the
caller says so. Knows no network.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenchat.errors import HubError

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SHA1_RE = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class RemoteFile:
    """A file as the Hub's listing describes it."""

    name: str
    size: int
    sha256: str | None  # LFS files: the content sha256
    blob_id: str | None  # the git blob sha1 (for an LFS file, that of its pointer, not the content)
    lfs: bool = False


def remote_file(sibling: Any) -> RemoteFile:
    """A RemoteFile from a huggingface_hub listing entry (`RepoSibling`)."""
    lfs = getattr(sibling, "lfs", None)
    sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
    size = (getattr(lfs, "size", None) if lfs else None) or sibling.size or 0
    return RemoteFile(sibling.rfilename, int(size), sha.lower() if sha else None,
                      getattr(sibling, "blob_id", None), lfs=bool(lfs))


@dataclass(frozen=True)
class Expected:
    kind: str  # "sha256" or "git sha1"
    value: str
    source: str  # where the hash came from, as shown to users


@dataclass(frozen=True)
class Check:
    """The outcome of checking one cached file."""

    name: str
    path: Path
    expected: Expected | None  # None: no hash to check against
    actual: str | None

    @property
    def ok(self) -> bool:
        return self.expected is None or self.actual == self.expected.value


def blob_etag(path: Path) -> str | None:
    """The ETag huggingface_hub saved a cached file under (`blobs/<etag>`), or None."""
    if not path.is_symlink():
        return None
    blob = Path(os.path.realpath(path))
    return blob.name.lower() if blob.parent.name == "blobs" else None


def expected_hash(f: RemoteFile, path: Path) -> Expected | None:
    """What `path` must hash to: the listing's sha256, else the ETag, else a small file's blob id."""
    if f.sha256:
        return Expected("sha256", f.sha256, "the Hub's file listing")
    etag = blob_etag(path)
    if etag and _SHA256_RE.fullmatch(etag):
        return Expected("sha256", etag, "the download's ETag")
    if etag and _SHA1_RE.fullmatch(etag):
        return Expected("git sha1", etag, "the download's ETag")
    if f.blob_id and not f.lfs:  # an LFS file's blob id hashes its pointer, not its content
        return Expected("git sha1", f.blob_id, "the Hub's file listing")
    return None


def check_file(f: RemoteFile, path: Path) -> Check:
    expected = expected_hash(f, path)
    if expected is None:
        return Check(f.name, path, None, None)
    actual = sha256_of(path) if expected.kind == "sha256" else git_sha1_of(path)
    return Check(f.name, path, expected, actual)


def remove_cached(path: Path) -> None:
    """Delete a cached file: the snapshot's link and the blob it points to."""
    blob = Path(os.path.realpath(path))
    for p in {path, blob}:
        try:
            p.unlink()
        except OSError:
            pass


def corrupt_error(repo_id: str, check: Check) -> HubError:
    assert check.expected is not None and check.actual is not None
    return HubError(
        f"{check.name} downloaded from {repo_id} is corrupt: its {check.expected.kind} is "
        f"{check.actual[:12]}..., {check.expected.source} says {check.expected.value[:12]}...; "
        "the bad file was removed",
        hint="run the command again; if it keeps failing, the network or mirror (HF_ENDPOINT) alters data",
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_sha1_of(path: Path) -> str:
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
