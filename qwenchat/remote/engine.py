"""`RemoteEngine`: an OpenAI-compatible server behind the engine's surface, so `ChatSession`
drives it exactly like a local `ChatEngine` (chat, complete, settings, token counts).

The server decides the defaults (every sampling field None). `chat()` and `complete()` validate
at once but send nothing until the first `next()`, so the session has saved the user's message
before any network failure. A 429 (or a 503 with Retry-After: a full queue) is retried at most
`MAX_TRIES` times within `RETRY_BUDGET_S` honouring Retry-After; a 400 naming a setting drops that setting and sends once more (reported
once through `take_notes()`); nothing else is retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any

from qwenchat.engine.errors import SettingsError
from qwenchat.engine.records import OPTION_RANGES, Chunk, GenerateOptions, Reply
from qwenchat.remote import tokens
from qwenchat.remote.client import DEFAULT_WAIT_S, ServerModel, asks_to_come_back, list_models, make_client, retry_after
from qwenchat.remote.errors import BusyError, NotFoundError, RemoteError, scrub
from qwenchat.remote.failures import refused_param, server_text, translate
from qwenchat.remote.feed import Feed
from qwenchat.remote.fields import Refusals, refused_field, request_fields
from qwenchat.remote.reference import RemoteRef
from qwenchat.remote.stream import Clock, read

Message = dict[str, str]
MAX_TRIES = 3  # a 429 is sent at most this many times in all
RETRY_BUDGET_S = 30.0  # and waited for at most this long in all


@dataclass(frozen=True)
class RemoteInfo:
    name: str  # the model id the server uses
    server: str  # its API base URL
    context_window: int = 0  # 0: the server did not say
    path: None = None
    device: str = "remote"
    dtype: str = ""
    placement_reason: str = ""
    has_chat_template: bool = True
    chat_tuned: bool = True
    load_s: float = 0.0
    quantize: str = "none"
    notes: tuple[str, ...] = ()
    exact_tokens: bool = False  # False: token counts are estimates (the server cannot count them)


@dataclass(frozen=True)
class RemoteDefaults:
    """The server decides every default: each option unset (GenerateOptions' own fields, so a
    new option needs no change here) and no token limit of ours."""

    sampling: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(
        **{f.name: None for f in fields(GenerateOptions) if f.name != "stop"}))
    max_new_tokens: int | None = None


class RemoteEngine:
    def __init__(self, ref: RemoteRef, model: ServerModel, api_key: str | None, client: Any,
                 first_token_timeout_s: float, load_s: float = 0.0, counter: tokens.Counter | None = None) -> None:
        self.ref, self.model, self._key, self._client = ref, model, api_key, client
        self.timeout_s = first_token_timeout_s
        self.defaults = RemoteDefaults()
        self._refusals = Refusals()
        self.counter = counter or tokens.Counter(ref, model.id, client)
        self.tokenizer = self.counter  # the session asks `engine.tokenizer.encode_plain`
        self.info = RemoteInfo(name=model.id, server=ref.base_url, context_window=model.context_window or 0,
                               placement_reason=f"server {ref.base_url}", load_s=load_s,
                               exact_tokens=self.counter.exact)

    @classmethod
    def connect(cls, ref: RemoteRef, api_key: str | None = None, *,
                first_token_timeout_s: float = 120.0) -> "RemoteEngine":
        """Ask the server what it offers and pick the model (RemoteError when it cannot be)."""
        if not first_token_timeout_s > 0:
            raise SettingsError(f"the request timeout is {first_token_timeout_s}", "use a number of seconds above 0")
        t0 = time.perf_counter()
        client = make_client(ref, api_key, first_token_timeout_s)
        try:
            model = pick(ref, list_models(ref, api_key, min(first_token_timeout_s, 30.0), client=client))
            counter = tokens.Counter.detect(ref, model.id, client)
        except BaseException:
            client.close()
            raise
        return cls(ref, model, api_key, client, first_token_timeout_s, time.perf_counter() - t0, counter)

    # -- the engine surface the session uses -------------------------------------------------

    def settings(self, options: GenerateOptions | None) -> int | None:
        """Checks `options` by the rules the local engine uses; the max_new_tokens in force
        (None: the server's own limit)."""
        o = options or GenerateOptions()
        for name, allowed in OPTION_RANGES.items():
            value = getattr(o, name, None)
            if value is not None and value not in allowed:
                raise SettingsError(f"{name} is {value!r}", f"use {allowed.describe()}")
        return o.max_new_tokens

    def chat(self, messages: Sequence[Message], options: GenerateOptions | None = None,
             cancel: threading.Event | None = None, continue_last: bool = False) -> Iterator[Chunk | Reply]:
        self.settings(options)
        if not messages:
            raise SettingsError("the conversation is empty", "send a message")
        if continue_last and messages[-1].get("role") != "assistant":
            raise SettingsError("there is no reply to continue", "send a message instead")
        body: dict[str, Any] = {"messages": [dict(m) for m in messages]}
        if continue_last:  # vLLM's (and llama.cpp's) way to extend the last assistant message
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        return self._run("/chat/completions", body, options, cancel or threading.Event(), chat=True)

    def complete(self, prompt: str, options: GenerateOptions | None = None,
                 cancel: threading.Event | None = None) -> Iterator[Chunk | Reply]:
        self.settings(options)
        if not prompt:
            raise SettingsError("the prompt is empty", "give some text to continue")
        return self._run("/completions", {"prompt": prompt}, options, cancel or threading.Event(), chat=False)

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        return self.counter.encode_chat(messages)

    def reset_cache(self) -> None:
        pass  # the server keeps its own cache

    def take_notes(self) -> list[str]:
        """What the server refused since the last call (each said once), for the faces to show."""
        return self._refusals.take()

    def close(self) -> None:
        self._client.close()

    # -- requests ---------------------------------------------------------------------------

    def _run(self, route: str, body: dict[str, Any], options: GenerateOptions | None,
             cancel: threading.Event, chat: bool) -> Iterator[Chunk | Reply]:
        clock = Clock(time.perf_counter())
        feed = Feed(lambda stop: self._open(route, body, options, stop, chat), cancel)
        said = False
        try:
            for record in read(feed, self.ref.base_url, chat, clock, self._estimate(body, chat)):
                said = said or isinstance(record, Chunk)
                yield record
        except Exception as e:
            raise translate(e, self.ref, self._key, model=self.model.id, timeout_s=self.timeout_s,
                            streaming=said) from None

    def _open(self, route: str, body: dict[str, Any], options: GenerateOptions | None,
              stop: threading.Event, chat: bool) -> Any:
        """The server's event stream for the request, after the bounded retries (in the feed's
        thread); None when `stop` was set while waiting."""
        import openai

        tries, waited = 0, 0.0
        while True:
            sent = request_fields(options, self._refusals.fields, chat)
            tries += 1
            try:
                return self._client.post(route, body={"model": self.model.id, **body, **sent, "stream": True},
                                         cast_to=object, stream=True, stream_cls=openai.Stream[object])
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                said = server_text(e.body, e.message)
                name = refused_field(refused_param(e.body), said, sent)
                if name is None:
                    raise translate(e, self.ref, self._key, model=self.model.id) from None
                self._refusals.add(name, said)
            except (openai.RateLimitError, openai.InternalServerError) as e:
                if not asks_to_come_back(e):  # a 5xx that is not "busy, come back later"
                    raise translate(e, self.ref, self._key, model=self.model.id, timeout_s=self.timeout_s) from None
                wait = retry_after(e)
                if tries >= MAX_TRIES or waited + wait > RETRY_BUDGET_S:
                    raise _busy(e, self, tries, wait) from None
                waited += wait
                if stop.wait(wait):
                    return None
            except Exception as e:
                raise translate(e, self.ref, self._key, model=self.model.id, timeout_s=self.timeout_s) from None

    @staticmethod
    def _estimate(body: dict[str, Any], chat: bool):
        """Token counts for a reply the server sent no usage for (a cancelled one, a server that
        refuses stream_options): estimated here, without asking the server, so a cancel never
        waits on it."""
        def counts(reply: str) -> tuple[int, int]:
            prompt = tokens.estimate_chat(body["messages"]) if chat else tokens.estimate(body["prompt"])
            return prompt, tokens.estimate(reply)
        return counts


def pick(ref: RemoteRef, offered: list[ServerModel]) -> ServerModel:
    """The model `ref` names (it must be offered), or the only one offered."""
    ids = ", ".join(m.id for m in offered)
    if ref.model is not None:
        for m in offered:
            if m.id == ref.model:
                return m
        raise NotFoundError(f"{ref.base_url} does not offer model {ref.model!r}" + (f"; it offers {ids}" if ids else ""),
                            f"use one of them: -m {ref.base_url}#ID" if offered else "load a model on the server")
    if len(offered) == 1:
        return offered[0]
    if not offered:
        raise RemoteError(f"{ref.base_url} offers no models", "load a model on the server, then try again")
    raise RemoteError(f"{ref.base_url} offers {len(offered)} models: {ids}",
                      f"name one: -m {ref.base_url}#{offered[0].id}")


def _busy(e: Any, engine: RemoteEngine, tries: int, wait: float) -> BusyError:
    said = scrub(server_text(e.body, ""), engine._key)
    asks = f"; it asks to wait {wait:g} s more" if wait > DEFAULT_WAIT_S else ""
    status = "429, too many requests" if e.status_code == 429 else f"{e.status_code}, unavailable"
    return BusyError(f"{engine.ref.base_url} is busy ({status}) after {tries} "
                     f"{'try' if tries == 1 else 'tries'}{asks}"
                     + (f" (the server says: {said})" if said else ""), "try again later")
