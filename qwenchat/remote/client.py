"""The `openai` client for one server, and what the server offers (`list_models`).

Every client is built with `max_retries=0`: we retry only a server that asks to be asked again
(a 429, or a 503 with Retry-After: `asks_to_come_back`), ourselves, bounded (engine.py; and
`list_models` waits up to LOADING_BUDGET_S for a server still loading its model, as `qwenchat
serve` says it is); nothing else is retried behind the user's back. `openai` is imported here, lazily,
so `import qwenchat.remote` stays cheap."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from qwenchat.remote.failures import not_openai, translate
from qwenchat.remote.reference import RemoteRef

CONNECT_TIMEOUT_S = 10.0
PROPS_TIMEOUT_S = 5.0
NO_KEY = "no-key"  # the client insists on a key; a server without auth ignores this one
LOADING_BUDGET_S = 120.0  # how long the model list waits for a server that is still loading
DEFAULT_WAIT_S = 1.0  # between tries when a server that asks to come back names no Retry-After


@dataclass(frozen=True)
class ServerModel:
    id: str
    context_window: int | None = None  # None: the server does not say
    owned_by: str | None = None


def make_client(ref: RemoteRef, api_key: str | None, timeout_s: float) -> Any:
    """An OpenAI client for `ref` whose reads wait at most `timeout_s` (the first token's
    deadline: a server sends nothing before it)."""
    import openai

    timeout = openai.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
    return openai.OpenAI(base_url=ref.base_url, api_key=api_key or NO_KEY, max_retries=0, timeout=timeout)


def list_models(ref: RemoteRef, api_key: str | None, timeout_s: float = 30.0, client: Any = None) -> list[ServerModel]:
    """The models `ref`'s server offers (GET /models), with their context windows when it says
    (vLLM's max_model_len; llama.cpp's n_ctx from /props, else its meta.n_ctx_train). Raises
    RemoteError. `client`: one to reuse (else one is made and closed here)."""
    own = client is None
    client = make_client(ref, api_key, timeout_s) if own else client
    try:
        try:
            raw = _models_when_ready(client, timeout_s)
            body = _json(raw, ref)
        except Exception as e:
            raise translate(e, ref, api_key, timeout_s=timeout_s) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise not_openai(ref.base_url, "JSON without a list of models under 'data'")
        # llama.cpp's server runs with a context (-c) smaller than the model's n_ctx_train; /props says which
        served = _llama_cpp_context(client, ref) if any(isinstance(m.get("meta"), dict) for m in data) else None
    finally:
        if own:
            client.close()
    return [ServerModel(m["id"], (served if isinstance(m.get("meta"), dict) else None) or _context(m),
                        m.get("owned_by") if isinstance(m.get("owned_by"), str) else None) for m in data]


def _models_when_ready(client: Any, timeout_s: float) -> Any:
    """GET /models, asked again while the server asks to come back (503 with Retry-After while it
    loads its model: `ask` right after starting `qwenchat serve` failed at once), for up to
    LOADING_BUDGET_S."""
    import openai

    waited = 0.0
    while True:
        try:
            return client.models.with_raw_response.list(timeout=timeout_s).http_response
        except openai.APIStatusError as e:
            wait = retry_after(e)
            if not asks_to_come_back(e) or waited + wait > LOADING_BUDGET_S:
                raise
            time.sleep(wait)
            waited += wait


def asks_to_come_back(e: Any) -> bool:
    """Whether an error response asks to be sent again later: a 429, or a 503 with Retry-After
    (qwenchat serve: loading, or its queue full; vLLM and others when overloaded)."""
    status = getattr(e, "status_code", None)
    return status == 429 or (status == 503 and "retry-after" in e.response.headers)


def retry_after(e: Any) -> float:
    """Seconds an error response's Retry-After asks to wait: seconds as sent; none, or an HTTP
    date (rare from these servers), DEFAULT_WAIT_S; a value that is not a finite number, forever
    (not waited)."""
    value = e.response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else DEFAULT_WAIT_S
    except ValueError:
        return DEFAULT_WAIT_S
    return max(0.0, seconds) if math.isfinite(seconds) else math.inf


def _json(response: Any, ref: RemoteRef) -> Any:
    kind = response.headers.get("content-type", "")
    text = response.text
    try:
        return json.loads(text)
    except ValueError:
        what = "an HTML page" if "html" in kind or text.lstrip().startswith("<") else f"{kind or 'text'} that is not JSON"
        raise not_openai(ref.base_url, what) from None


def _llama_cpp_context(client: Any, ref: RemoteRef) -> int | None:
    """The context llama.cpp's server runs with (GET /props), or None when it does not say."""
    try:
        props = client.get(ref.root + "/props", cast_to=object, options={"timeout": PROPS_TIMEOUT_S})
    except Exception:  # an older server without /props: n_ctx_train stands
        return None
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    for value in ((settings or {}).get("n_ctx") if isinstance(settings, dict) else None,
                  props.get("n_ctx") if isinstance(props, dict) else None):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _context(model: dict[str, Any]) -> int | None:
    for value in (model.get("max_model_len"), (model.get("meta") or {}).get("n_ctx_train")
                  if isinstance(model.get("meta"), dict) else None, model.get("context_length")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
