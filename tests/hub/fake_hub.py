"""A fake Hugging Face Hub on 127.0.0.1, enough for huggingface_hub's real client.

Serves model repos the way the Hub does:
  GET  /api/models/{repo}[/revision/{rev}]   JSON: id, sha, siblings (rfilename; with `?blobs=`
                                             also size, blobId and lfs {sha256, size, pointerSize})
  HEAD/GET /{repo}/resolve/{rev}/{file}      X-Repo-Commit, ETag (quoted; the sha256 for LFS files,
                                             the git blob sha1 otherwise), X-Linked-Etag and
                                             X-Linked-Size for LFS files, Content-Length, Range
Errors carry the Hub's X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo), which huggingface_hub turns into its typed exceptions.

Fault injection per test: `hub.fail(repo, file, kind, message=None)` with kind in "drop"
(connection closed half-way through the body, every time), "drop_once", "corrupt" (content that
does not match its etag), "missing" (404 EntryNotFound), or an int HTTP status (a plain error with
no X-Error-Code; `message` goes in X-Error-Message; file "" fails the repo's model-info call);
`hub.status_for_all = 500`; gated repos (`add_repo(..., gated=True)`, passing with `hub.token`).
A repo's listing can leave out every hash (`repo.listing_hashes = False`) and its ETags can be
opaque rather than hashes (`repo.opaque_etags = True`). `hub.requests` logs every request.

Use it through the `fake_hub` fixture (HF_ENDPOINT points at it, HF_HUB_OFFLINE is unset; the
server stops at teardown):  `from tests.hub.fake_hub import fake_hub  # noqa: F401`
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _QuietServer(ThreadingHTTPServer):
    """Dropped connections are what several tests inject; do not print their tracebacks."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    listing_hashes: bool = True  # False: siblings carry sizes only (no lfs.sha256, no blobId)
    opaque_etags: bool = False  # True: ETags that are no hash of the content
    commit: str = ""
    branches: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha256(self.files[name]).digest())
        self.commit = digest.hexdigest()
        self.branches = {"main": self.commit}

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def etag(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(name) else git_sha1(data)

    def served_etag(self, name: str) -> str:
        return f"opaque-{sorted(self.files).index(name)}-{len(self.files[name])}" if self.opaque_etags \
            else self.etag(name)

    def pointer(self, name: str) -> bytes:
        """The git-lfs pointer file that git stores for an LFS file (its blobId hashes this)."""
        data = self.files[name]
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                f"size {len(data)}\n").encode()

    def sibling(self, name: str, metadata: bool) -> dict:
        if not metadata:
            return {"rfilename": name}
        data = self.files[name]
        if not self.listing_hashes:
            return {"rfilename": name, "size": len(data)}
        blob = self.pointer(name) if self.is_lfs(name) else data
        out: dict = {"rfilename": name, "size": len(data), "blobId": git_sha1(blob)}
        if self.is_lfs(name):
            out["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                          "pointerSize": len(blob)}
        return out


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.faults: dict[tuple[str, str], str | int] = {}
        self.fault_messages: dict[tuple[str, str], str] = {}
        self.status_for_all: int | None = None
        self.token: str = "hf_fake_token"
        self.requests: list[tuple[str, str]] = []
        self.stopped = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup ---------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, source: Path | dict[str, bytes], *, exclude: tuple[str, ...] = (),
                 extra: dict[str, bytes] | None = None, config: dict | None = None,
                 gated: bool = False) -> FakeRepo:
        """Serve a model directory (or a name -> bytes mapping) as `repo_id`.
        `config` entries are merged into config.json (e.g. {"model_type": "llama"})."""
        if isinstance(source, Path):
            files = {p.name: p.read_bytes() for p in sorted(source.iterdir()) if p.is_file()}
        else:
            files = dict(source)
        for name in exclude:
            files.pop(name, None)
        files.update(extra or {})
        if config is not None:
            cfg = json.loads(files["config.json"])
            cfg.update(config)
            files["config.json"] = json.dumps(cfg, indent=2).encode()
        repo = FakeRepo(repo_id, files, gated=gated)
        self.repos[repo_id] = repo
        return repo

    def fail(self, repo_id: str, filename: str, kind: str | int, message: str | None = None) -> None:
        self.faults[(repo_id, filename)] = kind
        if message is not None:
            self.fault_messages[(repo_id, filename)] = message

    def count(self, needle: str = "") -> int:
        with self._lock:
            return sum(1 for _, path in self.requests if needle in path)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        server = _QuietServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.hub = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection ends its thread after this

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing -------------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        hub = self.hub
        if hub.stopped:
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        with hub._lock:
            hub.requests.append((self.command, path))
        if hub.status_for_all is not None:
            return self._error(hub.status_for_all, None, head)
        if path.startswith("/api/models/"):
            return self._model_info(path[len("/api/models/"):], parse_qs(parts.query), head)
        segments = path.lstrip("/").split("/")
        if len(segments) >= 5 and segments[2] == "resolve":
            repo_id = "/".join(segments[:2])
            return self._resolve(repo_id, segments[3], "/".join(segments[4:]), head)
        return self._error(404, None, head)

    def _repo(self, repo_id: str, head: bool) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", head)
        return repo

    def _model_info(self, rest: str, query: dict, head: bool) -> None:
        repo_id, _, rev = rest.partition("/revision/")
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        if isinstance(self.hub.faults.get((repo_id, "")), int):
            return self._fault_status(repo_id, "", head)
        commit = self._commit(repo, rev or "main", head)
        if commit is None:
            return
        metadata = "blobs" in query
        body = {
            "id": repo.repo_id, "modelId": repo.repo_id, "sha": commit, "private": False,
            "gated": "manual" if repo.gated else False, "disabled": False,
            "siblings": [repo.sibling(n, metadata) for n in sorted(repo.files)],
        }
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

    def _commit(self, repo: FakeRepo, rev: str, head: bool) -> str | None:
        if rev == repo.commit or rev in repo.branches:
            return repo.branches.get(rev, rev)
        self._error(404, "RevisionNotFound", head)
        return None

    def _resolve(self, repo_id: str, rev: str, filename: str, head: bool) -> None:
        hub = self.hub
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        commit = self._commit(repo, rev, head)
        if commit is None:
            return
        if repo.gated and self.headers.get("authorization") != f"Bearer {hub.token}":
            return self._error(401, "GatedRepo", head, {"X-Error-Message": "Access to this repo is restricted."})
        fault = hub.faults.get((repo_id, filename))
        if isinstance(fault, int):
            return self._fault_status(repo_id, filename, head)
        if filename not in repo.files or fault == "missing":
            return self._error(404, "EntryNotFound", head, {"X-Repo-Commit": commit})
        data = repo.files[filename]
        etag = repo.served_etag(filename)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if repo.is_lfs(filename):
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        if fault == "corrupt" and not head:
            data = bytes(b ^ 0x5A for b in data[:64]) + data[64:]
        status, body = 200, data
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not head:
            start_s, _, end_s = rng[len("bytes="):].partition("-")
            start = int(start_s)
            end = int(end_s) if end_s else len(data) - 1
            body = data[start:end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        drop = fault == "drop" or (fault == "drop_once" and not head)
        if drop and not head:
            if fault == "drop_once":
                hub.faults.pop((repo_id, filename), None)
            return self._send_truncated(status, body, headers)
        self._send(status, body, headers, head)

    def _fault_status(self, repo_id: str, filename: str, head: bool) -> None:
        status = self.hub.faults[(repo_id, filename)]
        message = self.hub.fault_messages.get((repo_id, filename))
        assert isinstance(status, int)
        self._error(status, None, head, {"X-Error-Message": message} if message else None)

    # -- responses -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_truncated(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Promise the whole body, send half of it, and hang up."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[: max(1, len(body) // 2)])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error(self, status: int, code: str | None, head: bool, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json"} | (extra or {})
        if code:
            headers["X-Error-Code"] = code
        body = json.dumps({"error": code or f"HTTP {status}"}).encode()
        self._send(status, body, headers, head)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake Hub; HF_ENDPOINT points at it and HF_HUB_OFFLINE is unset."""
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    try:
        yield hub
    finally:
        hub.stop()
