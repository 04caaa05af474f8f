"""Token generation on top of the model and its KV cache, as a ladder of small verbs:
`prefill` (feed prompt tokens in chunks) -> `decode_step` (feed one token) -> `stream` (a
generator yielding a typed record per text chunk, then one `Reply`).

Nothing here prints, parses arguments or knows about chat templates; `chat.py` builds prompts.
Cancellation comes from another thread through a `threading.Event`, checked before every step,
so a reply stops within one token and the cache stays consistent: `cache.tokens` always names
exactly the tokens whose keys/values are stored.

On the CPU the decode steps run at the thread count `threads.ThreadChooser` picks from their
timings (fewer threads when another process holds a core); the prompt runs at its current pick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from qwenchat.engine.cache import KVCache
from qwenchat.engine.constrain import Grammar
from qwenchat.engine.errors import ModelOutputError, SettingsError
from qwenchat.engine.model import Qwen2ForCausalLM
from qwenchat.engine.layer_major import PrefillCancelled
from qwenchat.engine.records import OPTION_RANGES, Chunk, FinishReason, Reply, Timings, Usage
from qwenchat.engine.sampling import INVALID_SCORES, Sampler, SamplingParams
from qwenchat.engine.threads import ThreadChooser, gpu_host, shared
from qwenchat.engine.tokenizer import StreamDecoder, Tokenizer

# Prompt tokens per model call. The CPU runs a call layer-major (model.py: one attention call per
# layer, int8 weights dequantized once per layer, everything else in row blocks), so a bigger call
# wastes less; only a few per-row activations grow with it (~15 KB a row at hidden size 896, ~60 MB
# here), and cancellation is checked between its layers. Longer prompts go in several calls.
PREFILL_CHUNK = 4096


@dataclass(frozen=True)
class GenerationSettings:
    sampling: SamplingParams
    max_new_tokens: int
    eos_ids: frozenset[int]
    stop: tuple[str, ...] = ()
    constraint: Grammar | None = None  # structured output: only tokens the grammar allows

    def __post_init__(self) -> None:
        allowed = OPTION_RANGES["max_new_tokens"]
        if self.max_new_tokens not in allowed:
            raise SettingsError(f"max_new_tokens must be {allowed.describe()}, got {self.max_new_tokens!r}",
                                "leave it unset to use the model's default")


def prefill(
    model: Qwen2ForCausalLM, cache: KVCache, ids: Sequence[int], cancel: threading.Event | None = None
) -> torch.Tensor | None:
    """Feed `ids` after what the cache holds; returns the last position's logits (V,), or None if
    cancelled (between chunks, or on the CPU between a chunk's layers; the cache then holds the
    chunks already fed)."""
    device = cache.k.device
    logits = None
    for start in range(0, len(ids), PREFILL_CHUNK):
        if cancel is not None and cancel.is_set():
            return None
        chunk = list(ids[start : start + PREFILL_CHUNK])
        pos = cache.length
        try:
            logits = model(torch.tensor([chunk], device=device), cache, pos, cancel=cancel)[0, -1]
        except PrefillCancelled:  # its keys/values are partial and stay unrecorded
            return None
        cache.tokens.extend(chunk)
    return logits


def decode_step(model: Qwen2ForCausalLM, cache: KVCache, token: torch.Tensor, tid: int | None = None) -> torch.Tensor:
    """Feed one sampled token (a 0-d tensor on the model's device; `tid` its value when the caller
    already has it, saving a second host sync); returns the next logits (V,)."""
    pos = cache.length
    logits = model(token.view(1, 1), cache, pos)[0, -1]
    cache.tokens.append(int(token) if tid is None else tid)
    return logits


def stream(
    model: Qwen2ForCausalLM,
    cache: KVCache,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    settings: GenerationSettings,
    cancel: threading.Event | None = None,
    dropped_messages: int = 0,
    threads: ThreadChooser | None = None,
) -> Iterator[Chunk | Reply]:
    """Generate a reply to `prompt_ids`, reusing the longest common prefix the cache holds.
    `threads`: the CPU thread chooser (None: the process's, `threads.shared()`); a GPU's cache
    takes `threads.gpu_host()` instead."""
    t0 = time.perf_counter()
    chooser = _chooser(threads, cache)
    cached = min(cache.common_prefix(prompt_ids), len(prompt_ids) - 1)  # prefill at least one token
    cache.trim(cached)
    new_ids = prompt_ids[cached:]
    budget = min(settings.max_new_tokens, cache.max_len - len(prompt_ids))
    sampler = Sampler(settings.sampling, model.config.vocab_size, cache.k.device)
    sampler.reset(prompt_ids)
    constraint = settings.constraint.start(model.config.vocab_size, cache.k.device) if settings.constraint else None
    decoder = StreamDecoder(tokenizer)
    stops = StopMatcher(settings.stop)
    out: list[int] = []
    finish: FinishReason = "length"
    t_first: float | None = None

    chooser.begin()
    logits = prefill(model, cache, new_ids, cancel)
    t_prefill_end = time.perf_counter()
    prefilled = len(new_ids)
    if logits is None:  # stopped while reading the prompt: count what the cache took of it
        finish, prefilled = "cancelled", cache.length - cached
    while logits is not None and len(out) < budget:
        if cancel is not None and cancel.is_set():
            finish = "cancelled"
            break
        token = sampler(logits if constraint is None else constraint.apply(logits))
        tid = int(token)  # the one host sync per token: stop checks and detokenization need it
        if tid == INVALID_SCORES:
            raise ModelOutputError(
                f"the model produced invalid scores (NaN or infinity) for token {len(out) + 1} of the reply",
                "its weights may be damaged, or its activations overflow the dtype: "
                "try float32 (--dtype float32), or download the model again",
            )
        if t_first is None:
            t_first = time.perf_counter()
        if tid in settings.eos_ids:
            finish = "stop"
            break
        out.append(tid)
        if constraint is not None:
            constraint.advance(tid)
        text, hit = stops.feed(decoder.push(tid))
        if text:
            yield Chunk(text)
        if hit or (constraint is not None and constraint.done):  # done: the grammar is complete
            finish = "stop"
            break
        if len(out) < budget:
            logits = _timed_step(model, cache, token, tid, chooser)

    if not stops.hit:
        tail, _ = stops.feed(decoder.flush(), final=True)
        if tail:
            yield Chunk(tail)
    t_end = time.perf_counter()
    t_first = t_first or t_end
    yield Reply(
        text=stops.text,
        finish_reason=finish,
        usage=Usage(len(prompt_ids), cached, prefilled, len(out)),
        timings=_timings(t0, t_prefill_end, t_first, t_end, prefilled, len(out)),
        token_ids=out,
        dropped_messages=dropped_messages,
    )


def _chooser(threads: ThreadChooser | None, cache: KVCache) -> ThreadChooser:
    if cache.k.device.type != "cpu":  # a GPU step: its host side wants few threads, not adaptation
        return gpu_host()
    return threads if threads is not None else shared()


def _timed_step(model: Qwen2ForCausalLM, cache: KVCache, token: torch.Tensor, tid: int,
                chooser: ThreadChooser) -> torch.Tensor:  # fmt: skip
    """decode_step at the chooser's count, its wall time reported back (a CPU step is synchronous;
    a GPU one's chooser has one count and ignores it)."""
    chooser.count()
    start = time.perf_counter()
    logits = decode_step(model, cache, token, tid)
    chooser.record(time.perf_counter() - start)
    return logits


def _timings(t0: float, t_prefill: float, t_first: float, t_end: float, prefilled: int, decoded: int) -> Timings:
    prefill_s, decode_s = t_prefill - t0, t_end - t_first
    return Timings(
        ttft_s=t_first - t0,
        prefill_s=prefill_s,
        decode_s=decode_s,
        prefill_tok_s=prefilled / prefill_s if prefill_s > 0 else 0.0,
        # the first token comes out of prefill; decode speed counts the ones after it
        decode_tok_s=(decoded - 1) / decode_s if decoded > 1 and decode_s > 0 else 0.0,
    )


class StopMatcher:
    """Cuts the text at the first stop string, holding back any tail that may start one, so a
    stop string is never shown even when it arrives split across tokens."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""  # everything released so far
        self._pending = ""
        self.hit = False

    def feed(self, piece: str, final: bool = False) -> tuple[str, bool]:
        """Returns (text safe to release now, whether a stop string was found)."""
        if self.hit:
            return "", True
        buf = self._pending + piece
        if not self.stops:
            self._pending = ""
            return self._release(buf), False
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            self._pending = ""
            return self._release(buf[:cut]), True
        keep = 0 if final else self._partial_suffix(buf)
        self._pending = buf[len(buf) - keep :] if keep else ""
        return self._release(buf[: len(buf) - keep]), False

    def _partial_suffix(self, buf: str) -> int:
        longest = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), longest, -1):
                if buf.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _release(self, text: str) -> str:
        self.text += text
        return text
