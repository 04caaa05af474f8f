"""huggingface_hub and network exceptions -> `HubError`s that say what the Hub answered and what
to do about it. KeyboardInterrupt passes untouched."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from qwenchat.errors import HubError, in_chain
from qwenchat.hub.cache import cache_dir, endpoint, ref_text

OFFLINE_HINT = "check your connection; models already downloaded work offline with HF_HUB_OFFLINE=1"


@contextmanager
def hub_errors(repo_id: str, revision: str | None, name: str) -> Iterator[None]:
    """Turn what a Hub call raises into HubErrors; `name` is the model as the user wrote it."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - what is not translated is re-raised as it was
        err = translate(e, repo_id, revision, name)
        if err is e:
            raise
        raise err from None


def translate(e: BaseException, repo_id: str, revision: str | None, name: str) -> BaseException:
    """The HubError for `e`, or `e` itself when it is nothing a user can act on."""
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

    # huggingface_hub wraps a failed file lookup in LocalEntryNotFoundError ("check your
    # connection") whatever the Hub answered; the answer itself is the cause.
    http = in_chain(e, HfHubHTTPError)
    ref, ep = ref_text(repo_id, revision), endpoint()
    if isinstance(http, GatedRepoError):
        return HubError(
            f"{repo_id} is a gated repo: downloading it needs a Hugging Face token and the accepted license",
            hint=f"accept the license on {ep}/{repo_id}, then set HF_TOKEN or run `hf auth login`",
        )
    if isinstance(http, RepositoryNotFoundError):
        return HubError(f"model repo {repo_id} was not found on {ep}",
                        hint="check the spelling (owner/name); a private repo needs HF_TOKEN or `hf auth login`")
    if isinstance(http, RevisionNotFoundError):
        return HubError(f"revision '{revision}' was not found in {repo_id}",
                        hint="use a branch, tag or commit that exists in the repo")
    if isinstance(http, RemoteEntryNotFoundError):
        return HubError(f"a file listed for {ref} is missing on the Hub",
                        hint="the repo changed during the download; run the command again")
    if http is not None and http.response is not None:
        return http_error(http.response.status_code, getattr(http, "server_message", None), repo_id, ref)
    if in_chain(e, FileMetadataError):
        return HubError(f"the server at {ep} answered without the file details a Hugging Face Hub sends ({ref})",
                        hint="check that HF_ENDPOINT points at a Hub or a Hub mirror, and any proxy in between")
    if isinstance(e, (httpx2.TransportError, ConnectionError, TimeoutError)):  # mid-transfer
        return HubError(f"cannot download {name}: network error talking to {ep} ({type(e).__name__})",
                        hint=OFFLINE_HINT)
    if in_chain(e, (httpx2.TransportError, ConnectionError, TimeoutError, OfflineModeIsEnabled)):
        return HubError(f"cannot download {name}: the Hub at {ep} is not reachable", hint=OFFLINE_HINT)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return HubError(f"the disk holding {cache_dir()} filled up while downloading {name}",
                        hint="free some space, or point HF_HOME / HF_HUB_CACHE at a larger disk")
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return HubError(f"the download of {name} was cut short", hint=f"run `qwenchat pull {name}` again")
    if isinstance(e, LocalEntryNotFoundError):
        return HubError(f"cannot download {name}: the Hub at {ep} is not reachable", hint=OFFLINE_HINT)
    return e


def http_error(status: int, server_message: str | None, repo_id: str, ref: str) -> HubError:
    """What the Hub answered (status and its own words) and the fix for that answer."""
    ep = endpoint()
    said = f": {_one_line(server_message)}" if server_message else ""
    what = f"the Hub at {ep} answered HTTP {status} for {ref}{said}"
    if status == 401:
        hint = "set HF_TOKEN (or run `hf auth login`) with a token that can read this repo"
    elif status == 403:
        what = f"the Hub at {ep} refused access to {ref} (HTTP 403{said})"
        hint = (f"if the repo is gated, accept its license on {ep}/{repo_id} and set HF_TOKEN (or run "
                "`hf auth login`) with a token allowed to read gated repos; otherwise check the token's permissions")
    elif status == 404:
        hint = "check the repo name, the revision and HF_ENDPOINT"
    elif status == 429:
        hint = "the Hub is rate-limiting you: wait a minute and try again (a token raises the limit: set HF_TOKEN)"
    elif status >= 500:
        what = f"the Hub at {ep} failed with a server error (HTTP {status}{said}) for {ref}"
        hint = "try again later; " + OFFLINE_HINT
    else:
        hint = f"try again later; if it persists, check HF_ENDPOINT ({ep}) and any proxy in between"
    return HubError(what, hint=hint)


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
