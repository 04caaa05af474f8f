"""Downloading through huggingface_hub's real client from the fake Hub: order, verification,
pinning, offline reuse, progress, interruption, disk space, and every fault as a HubError."""

from __future__ import annotations

import json
import os
from collections import namedtuple
from pathlib import Path

import pytest

from qwenchat import hub
from qwenchat.errors import HubError
from qwenchat.models import resolve_model
from tests.hub.conftest import ALIAS_REPO
from tests.hub.fake_hub import FakeHub

REPO = "acme/tiny-qwen"


class Recorder(hub.NullProgress):
    def __init__(self) -> None:
        self.started: list = []
        self.events: list[tuple] = []
        self.finished = 0

    def on_start(self, repo_id, files, total_bytes):
        self.started.append((repo_id, list(files), total_bytes))

    def on_bytes(self, filename, file_done, file_total, done, total):
        self.events.append((filename, file_done, file_total, done, total))

    def on_finish(self):
        self.finished += 1


@pytest.fixture
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub sleeps 1 s between resume attempts; tests need not wait."""
    import huggingface_hub.file_download as fd
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(fd.time, "sleep", lambda s: None)
    monkeypatch.setattr(http.time, "sleep", lambda s: None)  # its backoff between retries of a 5xx


def _file_requests(h: FakeHub, name: str) -> int:
    return sum(1 for method, path in h.requests if method == "GET" and path.endswith("/" + name))


def test_alias_download_verifies_pins_and_resolves_offline_afterwards(
    hub_with_alias: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress = Recorder()
    model = resolve_model("qwen2.5-0.5b-instruct", progress=progress)
    repo = hub_with_alias.repos[ALIAS_REPO]
    assert model.source == "alias" and model.repo_id == ALIAS_REPO and model.revision == repo.commit
    assert model.path == hub.cache_dir() / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / repo.commit
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "model.safetensors"):
        assert (model.path / name).read_bytes() == repo.files[name]
    # config.json first, weights last
    gets = [p.rsplit("/", 1)[-1] for m, p in hub_with_alias.requests if m == "GET" and "/resolve/" in p]
    assert gets[0] == "config.json" and gets[-1] == "model.safetensors"
    # the commit is pinned in the snapshot refs
    assert (hub.repo_cache_path(ALIAS_REPO) / "refs" / "main").read_text() == repo.commit
    # progress: one start, monotonic overall bytes ending at the total, finish called
    (repo_id, files, total), = progress.started
    assert repo_id == ALIAS_REPO and total == sum(size for _, size in files)
    assert [e[3] for e in progress.events] == sorted(e[3] for e in progress.events)
    assert progress.events[-1][3] == total and progress.finished == 1

    # Second resolve: the server is gone and HF_HUB_OFFLINE=1; no request is made.
    before = len(hub_with_alias.requests)
    hub_with_alias.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = resolve_model("qwen2.5-0.5b-instruct")
    assert again == model
    assert len(hub_with_alias.requests) == before


def test_cached_model_resolves_without_network_even_when_online(hub_with_alias: FakeHub) -> None:
    first = resolve_model(ALIAS_REPO)
    before = len(hub_with_alias.requests)
    assert resolve_model(ALIAS_REPO) == first
    assert len(hub_with_alias.requests) == before
    assert first.source == "hub"


def test_revision_pins_a_commit_and_hf_hub_cache_is_honoured(
    fake_hub: FakeHub, tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    repo = fake_hub.add_repo(REPO, tiny_models["untied"])
    model = resolve_model(f"{REPO}@{repo.commit}")
    assert model.revision == repo.commit and model.name == f"{REPO}@{repo.commit}"
    assert str(model.path).startswith(str(tmp_path / "elsewhere"))
    assert not (hub.repo_cache_path(REPO) / "refs" / "main").exists()  # a commit needs no ref
    with pytest.raises(HubError, match="revision 'nope' was not found"):
        resolve_model(f"{REPO}@nope")


def test_sharded_repo_downloads_index_and_every_shard(fake_hub: FakeHub, sharded_model: Path) -> None:
    fake_hub.add_repo(REPO, sharded_model, extra={"README.md": b"# tiny", "pytorch_model.bin": b"pickle"})
    model = resolve_model(REPO)
    names = sorted(p.name for p in model.path.iterdir())
    assert names == sorted([
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
    ])
    assert _file_requests(fake_hub, "pytorch_model.bin") == 0 and _file_requests(fake_hub, "README.md") == 0


def test_non_qwen2_repo_is_refused_before_the_weights(fake_hub: FakeHub, tiny_models) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"], config={"model_type": "llama"})
    with pytest.raises(HubError, match="'llama' model") as err:
        resolve_model(REPO)
    assert "qwen2" in str(err.value)
    assert _file_requests(fake_hub, "model.safetensors") == 0


def test_pickle_only_repo_is_refused(fake_hub: FakeHub, tiny_models) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"], exclude=("model.safetensors",),
                      extra={"pytorch_model.bin": b"\x80\x04pickle"})
    with pytest.raises(HubError, match="pickle weights") as err:
        resolve_model(REPO)
    assert "safetensors" in err.value.hint
    assert not any("/resolve/" in p for _, p in fake_hub.requests)


def test_unknown_repo(fake_hub: FakeHub) -> None:
    with pytest.raises(HubError, match="acme/missing was not found") as err:
        resolve_model("acme/missing")
    assert "HF_TOKEN" in err.value.hint


def test_gated_repo_needs_a_token(fake_hub: FakeHub, tiny_models, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"], gated=True)
    with pytest.raises(HubError, match="gated") as err:
        resolve_model(REPO)
    assert "HF_TOKEN" in err.value.hint and "hf auth login" in err.value.hint and "license" in err.value.hint
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    assert (resolve_model(REPO).path / "model.safetensors").is_file()


def test_file_missing_on_the_server(fake_hub: FakeHub, tiny_models) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    fake_hub.fail(REPO, "tokenizer.json", "missing")
    with pytest.raises(HubError, match="missing on the Hub"):
        resolve_model(REPO)
    assert hub.cached_snapshot(REPO) is None


@pytest.mark.parametrize("where", ["everything", "weights"])
def test_server_errors(fake_hub: FakeHub, tiny_models, where: str, no_retry_sleep) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    if where == "everything":
        fake_hub.status_for_all = 500
    else:
        fake_hub.fail(REPO, "model.safetensors", 503)
    with pytest.raises(HubError) as err:
        resolve_model(REPO)
    text = str(err.value)
    # a failed weights lookup says what the Hub answered too, not "not reachable"
    assert "server error" in text and ("HTTP 500" if where == "everything" else "HTTP 503") in text
    assert "not reachable" not in text and "try again later" in err.value.hint


def test_network_down(fake_hub: FakeHub) -> None:
    fake_hub.stop()
    with pytest.raises(HubError) as err:
        resolve_model("qwen2-0.5b")
    assert "HF_HUB_OFFLINE=1" in err.value.hint


def test_offline_without_the_model_names_pull(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="qwen2-1.5b-instruct") as err:
        resolve_model("qwen2-1.5b-instruct")
    assert "qwenchat pull qwen2-1.5b-instruct" in err.value.hint
    assert fake_hub.requests == []


def test_not_downloaded_without_download(hub_with_alias: FakeHub) -> None:
    with pytest.raises(HubError, match="not downloaded") as err:
        resolve_model("qwen2.5-0.5b-instruct", download=False)
    assert "qwenchat pull" in err.value.hint and hub_with_alias.requests == []


def test_connection_dropped_once_resumes(fake_hub: FakeHub, tiny_models, no_retry_sleep) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])
    fake_hub.fail(REPO, "model.safetensors", "drop_once")
    model = resolve_model(REPO)
    assert (model.path / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
    assert _file_requests(fake_hub, "model.safetensors") == 2  # the retry resumed with a Range


def test_connection_dropped_every_time(fake_hub: FakeHub, tiny_models, no_retry_sleep) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    fake_hub.fail(REPO, "model.safetensors", "drop")
    with pytest.raises(HubError, match="network error|cut short"):
        resolve_model(REPO)
    assert hub.cached_snapshot(REPO) is None
    assert not list(hub.repo_cache_path(REPO).rglob("*.incomplete"))


def test_corrupt_blob_is_removed_and_reported(fake_hub: FakeHub, tiny_models) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])
    fake_hub.fail(REPO, "model.safetensors", "corrupt")
    with pytest.raises(HubError, match="corrupt") as err:
        resolve_model(REPO)
    assert "removed" in str(err.value)
    sha = repo.etag("model.safetensors")
    assert not (hub.repo_cache_path(REPO) / "blobs" / sha).exists()
    assert not (hub.repo_cache_path(REPO) / "snapshots" / repo.commit / "model.safetensors").exists()
    assert hub.cached_snapshot(REPO) is None
    fake_hub.faults.clear()  # the next run downloads it cleanly
    model = resolve_model(REPO)
    assert (model.path / "model.safetensors").read_bytes() == repo.files["model.safetensors"]


def test_corrupt_small_file_is_caught_by_its_git_hash(fake_hub: FakeHub, tiny_models) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    fake_hub.fail(REPO, "tokenizer.json", "corrupt")
    with pytest.raises(HubError, match="tokenizer.json .*corrupt"):
        resolve_model(REPO)


def test_ctrl_c_mid_download_leaves_nothing_loadable_and_next_run_completes(
    fake_hub: FakeHub, tiny_models
) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])

    class Interrupt(Recorder):
        def on_bytes(self, filename, file_done, file_total, done, total):
            if filename == "model.safetensors" and file_done > 0:
                raise KeyboardInterrupt

    progress = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        resolve_model(REPO, progress=progress)
    assert progress.finished == 1
    cache = hub.repo_cache_path(REPO)
    assert not list(cache.rglob("*.incomplete"))
    assert not (cache / "snapshots" / repo.commit / "model.safetensors").exists()
    assert hub.cached_snapshot(REPO) is None
    model = resolve_model(REPO)
    assert (model.path / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
    # the files fetched before the interruption were not fetched again
    assert _file_requests(fake_hub, "tokenizer.json") == 1


def test_disk_space_is_checked_before_downloading(
    fake_hub: FakeHub, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(HubError, match="not enough disk space") as err:
        resolve_model(REPO)
    text = str(err.value)
    assert "5.0 KB" in text and str(hub.cache_dir()) in text and "MB" in text
    assert _file_requests(fake_hub, "model.safetensors") == 0


def test_list_and_delete_cached(hub_with_alias: FakeHub) -> None:
    model = resolve_model(ALIAS_REPO)
    (cached,) = hub.list_cached()
    assert cached.repo_id == ALIAS_REPO and cached.snapshot is not None and cached.snapshot.path == model.path
    assert cached.size_on_disk >= sum(len(b) for b in hub_with_alias.repos[ALIAS_REPO].files.values()) - 1
    assert hub.delete_cached(ALIAS_REPO) > 0
    assert not hub.repo_cache_path(ALIAS_REPO).exists() and hub.list_cached() == []


def test_snapshot_missing_a_shard_is_not_complete(fake_hub: FakeHub, sharded_model: Path) -> None:
    fake_hub.add_repo(REPO, sharded_model)
    model = resolve_model(REPO)
    os.remove(model.path / "model-00002-of-00002.safetensors")
    assert hub.cached_snapshot(REPO) is None
    index = json.loads((model.path / "model.safetensors.index.json").read_text())
    assert "model-00002-of-00002.safetensors" in index["weight_map"].values()
    again = resolve_model(REPO)  # fetched again from the Hub
    assert (again.path / "model-00002-of-00002.safetensors").is_file()
