"""Every file is checked before it is believed: against the listing's hash, else the download's
ETag, with a word when neither exists; `pull` re-checks the cache and repairs damage. And an HTTP
error from the Hub is reported as what the Hub answered, with the fix for that answer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qwenchat import hub
from qwenchat.cli import run
from qwenchat.errors import HubError
from qwenchat.models import resolve_model
from tests.hub.fake_hub import FakeHub
from tests.hub.test_download import REPO, Recorder, no_retry_sleep  # noqa: F401  (fixture)


class Notes(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def on_note(self, text: str) -> None:
        self.notes.append(text)


def _damage(path: Path) -> None:
    """Flip bytes in the middle of a cached file, keeping its size (the blob behind the link)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_listing_without_hashes_still_checks_the_downloads_etag(fake_hub: FakeHub, tiny_models, name: str) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])
    repo.listing_hashes = False  # no lfs.sha256, no blobId: only the ETag can tell
    fake_hub.fail(REPO, name, "corrupt")
    with pytest.raises(HubError, match=f"{name} .*corrupt") as err:
        resolve_model(REPO)
    assert "ETag" in str(err.value) and "removed" in str(err.value)
    assert not (hub.repo_cache_path(REPO) / "blobs" / repo.etag(name)).exists()
    assert hub.cached_snapshot(REPO) is None
    fake_hub.faults.clear()
    model = resolve_model(REPO)
    assert (model.path / name).read_bytes() == repo.files[name]


def test_lfs_blob_id_hashes_the_pointer_and_is_not_mistaken_for_the_content(
    fake_hub: FakeHub, tiny_models
) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    model = hub.download_snapshot(REPO)  # the listing's blobId of an LFS file is its pointer's
    assert hub.snapshot_complete(model.path)


def test_a_file_with_no_hash_at_all_is_downloaded_with_a_word(fake_hub: FakeHub, tiny_models) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])
    repo.listing_hashes, repo.opaque_etags = False, True
    notes = Notes()
    snap = hub.download_snapshot(REPO, progress=notes)
    assert (snap.path / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
    unchecked = [n for n in notes.notes if "cannot be checked" in n]
    assert any(n.startswith("model.safetensors ") for n in unchecked), notes.notes
    assert len(unchecked) == len([p for p in snap.path.iterdir()])


def test_without_a_ui_the_word_reaches_the_log(fake_hub: FakeHub, tiny_models, caplog) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])
    repo.listing_hashes, repo.opaque_etags = False, True
    resolve_model(REPO)
    assert any("model.safetensors" in r.message and "cannot be checked" in r.message for r in caplog.records)


@pytest.mark.parametrize("listing_hashes", [True, False])
def test_pull_rechecks_the_cache_and_repairs_a_damaged_file(
    fake_hub: FakeHub, tiny_models, listing_hashes: bool
) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])
    repo.listing_hashes = listing_hashes
    model = resolve_model(REPO)
    _damage(model.path / "model.safetensors")
    _damage(model.path / "tokenizer.json")
    assert resolve_model(REPO) == model  # an ordinary start does not re-hash the cache
    notes = Notes()
    snap = hub.download_snapshot(REPO, progress=notes, verify_cached=True)
    assert snap.path == model.path
    for name in ("model.safetensors", "tokenizer.json"):
        assert (snap.path / name).read_bytes() == repo.files[name]
        assert any(n.startswith(f"{name} ") and "damaged" in n for n in notes.notes), notes.notes
    gets = [p for m, p in fake_hub.requests if m == "GET" and p.endswith("/config.json")]
    assert len(gets) == 1  # an intact file is not fetched again


def test_qwenchat_pull_repairs_and_says_so(fake_hub: FakeHub, tiny_models, capsys) -> None:
    repo = fake_hub.add_repo(REPO, tiny_models["base"])
    model = resolve_model(REPO)
    _damage(model.path / "model.safetensors")
    assert run(["pull", REPO]) == 0
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "damaged" in err and "ready at" in err
    assert (model.path / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
    assert run(["pull", REPO]) == 0  # intact now: nothing to say about damage
    assert "damaged" not in capsys.readouterr().err


def test_offline_pull_finds_damage_it_cannot_repair(
    fake_hub: FakeHub, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    model = resolve_model(REPO)
    _damage(model.path / "model.safetensors")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="model.safetensors .*damaged") as err:
        hub.download_snapshot(REPO, verify_cached=True, progress=Notes())
    assert "HF_HUB_OFFLINE" in err.value.hint and f"qwenchat pull {REPO}" in err.value.hint
    assert not os.path.exists(model.path / "model.safetensors")  # never loaded as the weights
    assert hub.cached_snapshot(REPO) is None


# --------------------------------------------------------------------------- what the Hub answered


@pytest.mark.parametrize("where", ["model.safetensors", ""])  # "": the repo's model-info call
def test_plain_403_says_what_the_hub_answered(fake_hub: FakeHub, tiny_models, where: str) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    fake_hub.fail(REPO, where, 403, message="Access to this resource is disabled by your organization")
    with pytest.raises(HubError) as err:
        resolve_model(REPO)
    text = str(err.value)
    assert "not reachable" not in text and "connection" not in text
    assert "HTTP 403" in text and "disabled by your organization" in text and REPO in text
    assert "HF_TOKEN" in err.value.hint and "license" in err.value.hint


@pytest.mark.parametrize(("status", "hint"), [(404, "check the repo name"), (429, "rate-limiting"),
                                              (401, "HF_TOKEN"), (418, "HF_ENDPOINT")])
def test_other_plain_http_errors_name_status_and_fix(
    fake_hub: FakeHub, tiny_models, status: int, hint: str, no_retry_sleep  # noqa: F811
) -> None:
    fake_hub.add_repo(REPO, tiny_models["base"])
    fake_hub.fail(REPO, "model.safetensors", status)
    with pytest.raises(HubError) as err:
        resolve_model(REPO)
    assert f"HTTP {status}" in str(err.value) and "not reachable" not in str(err.value)
    assert hint in err.value.hint
