"""What `qwenchat bench` measures, and how: the workloads and the measuring, no UI.

One `run()` loads a model and runs, in order:
1. the short chat prompt (~40 tokens), fresh cache, 1 token: time to first token of the first
   request after loading (`first_ttft_s`, what a user waits for after start-up);
2. the same prompt again, fresh cache, `decode_tokens` forced greedy new tokens (the model's
   end-of-sequence ids are switched off for this run so every run decodes the same length):
   warm time to first token, short-prompt prefill tok/s, decode tok/s;
3. a ten-turn conversation (~3,400 tokens with the Qwen2 tokenizer), fresh cache, 1 token:
   long-prompt prefill tok/s;
4. a follow-up question (~20 tokens) after a short reply to that conversation: time to first
   token with the conversation's keys/values reused from the cache (`followup_cached_tokens`
   says how many were reused; a follow-up that re-prefilled everything would show 0).
Then the peak memory in MB (10^6 bytes): the process's RSS high-water mark (so it includes
Python and torch themselves, as a user's process does) and, on CUDA, torch's peak allocation.

The texts are fixed strings built from a fixed seed, so every run and every machine measures
the same tokens. The engine is imported lazily (inside `run`), so importing this module is cheap.
`Workload` sizes can be shrunk (`QUICK`) for smoke runs and tests.
"""

from __future__ import annotations

import inspect
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

SYSTEM_PROMPT = "You are a helpful assistant."
SHORT_PROMPT = (
    "Write a Python function that checks whether a string is a palindrome, "
    "ignoring case and punctuation, and explain it briefly."
)  # ~40 tokens with the chat template and system prompt
FOLLOWUP = "Thanks. Now summarise the three most important points of our discussion in one short list."
LAST_REPLY = "Understood."  # the fixed reply to the conversation's last question, before the follow-up

# JSON keys of a result, in display order, with their labels and units (the documented output).
FIELDS: dict[str, tuple[str, str]] = {
    "load_s": ("load time", "s"),
    "first_ttft_s": ("time to first token, first request", "s"),
    "ttft_s": ("time to first token, short prompt", "s"),
    "short_prompt_tokens": ("short prompt", "tokens"),
    "short_prefill_tok_s": ("prefill, short prompt", "tok/s"),
    "long_prompt_tokens": ("long prompt (10-turn conversation)", "tokens"),
    "long_prefill_s": ("prefill time, long prompt", "s"),
    "long_prefill_tok_s": ("prefill, long prompt", "tok/s"),
    "decode_tokens": ("decoded tokens (forced)", "tokens"),
    "decode_tok_s": ("decode", "tok/s"),
    "followup_prompt_tokens": ("follow-up turn: prompt", "tokens"),
    "followup_cached_tokens": ("follow-up turn: reused from cache", "tokens"),
    "followup_ttft_s": ("follow-up turn: time to first token", "s"),
    "peak_rss_mb": ("peak memory (RSS)", "MB"),
    "peak_cuda_mb": ("peak CUDA memory allocated", "MB"),
}
INFO_KEYS = ("model", "path", "device", "dtype", "quantize", "threads", "torch")

_WORDS = (
    "cache model token layer tensor request reply server client queue buffer thread process "
    "function module package test result value error config file path option window prompt "
    "memory speed latency batch stream chunk index record table query schema column row key "
    "parser lexer compiler runtime engine kernel driver network socket header payload schema"
).split()
_VERBS = "reads writes checks builds loads stores sends parses returns updates measures skips".split()
_ADJ = "small large fast slow stale fresh empty full shared private local remote simple".split()


@dataclass(frozen=True)
class Workload:
    turns: int = 10  # user/assistant exchanges in the long conversation
    user_sentences: int = 3  # per user message
    reply_sentences: int = 23  # per assistant reply
    decode_tokens: int = 128  # forced new tokens of the decode run
    seed: int = 20261123


FULL = Workload()
QUICK = Workload(turns=3, user_sentences=1, reply_sentences=3, decode_tokens=16)


def _sentence(rng: random.Random) -> str:
    a, b = rng.sample(_WORDS, 2)
    s = f"The {rng.choice(_ADJ)} {a} {rng.choice(_VERBS)} the {rng.choice(_ADJ)} {b}"
    if rng.random() < 0.4:
        s += f" before the {rng.choice(_WORDS)} {rng.choice(_VERBS)} it again"
    if rng.random() < 0.2:
        s += f", so `{a}_{b}({rng.randint(0, 99)})` returns {rng.randint(100, 9999)}"
    return s + "."


def conversation(w: Workload = FULL) -> list[dict[str, str]]:
    """The long conversation: a system prompt, then `turns` exchanges, ending with the last
    user question (no reply yet). Same seed, same text, on every machine."""
    rng = random.Random(w.seed)
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
    for i in range(w.turns):
        question = " ".join(_sentence(rng) for _ in range(w.user_sentences))
        msgs.append({"role": "user", "content": f"Question {i + 1}: {question} Why does that happen?"})
        if i < w.turns - 1:
            reply = " ".join(_sentence(rng) for _ in range(w.reply_sentences))
            msgs.append({"role": "assistant", "content": reply})
    return msgs


def followup_conversation(w: Workload = FULL) -> list[dict[str, str]]:
    """The conversation, a short fixed reply to its last question, then the follow-up question."""
    return conversation(w) + [{"role": "assistant", "content": LAST_REPLY}, {"role": "user", "content": FOLLOWUP}]


def short_chat() -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": SHORT_PROMPT}]


def peak_rss_mb() -> float:
    """This process's RSS high-water mark in MB of 10^6 bytes (ru_maxrss is KiB on Linux,
    bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024) / 1e6


def engine_supports_quantize() -> bool:
    from qwenchat.engine.chat import ChatEngine

    return "quantize" in inspect.signature(ChatEngine.load).parameters


Progress = Callable[[str], None]


def run(
    model_dir: Path | str,
    *,
    device: str | None = "auto",
    dtype: str | None = "auto",
    quantize: str | None = None,
    workload: Workload = FULL,
    model_name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Load the model and measure every workload; returns one flat dict (keys: INFO_KEYS, FIELDS).

    `progress(step)` is called before each step (for a progress display)."""
    step = progress or (lambda _name: None)
    step("loading the model")
    import torch

    from qwenchat.engine.chat import ChatEngine, GenerateOptions

    from qwenchat.paths import int8_cache_dir, kernels_dir

    kwargs: dict[str, Any] = {"device": device, "dtype": dtype, "kernel_dir": kernels_dir()}
    if "int8_cache_dir" in inspect.signature(ChatEngine.load).parameters:  # older engines cache by themselves
        kwargs["int8_cache_dir"] = int8_cache_dir()
    if quantize is not None:
        if not engine_supports_quantize():
            from qwenchat.engine.errors import SettingsError

            raise SettingsError("this version of the engine has no quantize option", "leave out --quantize")
        kwargs["quantize"] = quantize
    cuda = device is not None and device.startswith("cuda") or (device in (None, "auto") and torch.cuda.is_available())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    engine = ChatEngine.load(model_dir, **kwargs)
    load_s = time.perf_counter() - t0
    greedy = GenerateOptions(temperature=0.0, repetition_penalty=1.0)
    forced = replace(engine.defaults, eos_ids=frozenset())

    def ask(messages: list[dict[str, str]], max_new: int, fresh: bool, force: bool = False):
        if fresh:
            engine.reset_cache()
        saved = engine.defaults
        if force:
            engine.defaults = forced
        try:
            events = list(engine.chat(messages, replace(greedy, max_new_tokens=max_new)))
        finally:
            engine.defaults = saved
        return events[-1]  # the Reply

    step("short prompt, first request")
    first = ask(short_chat(), 1, fresh=True)
    step(f"short prompt, {workload.decode_tokens} new tokens")
    dec = ask(short_chat(), workload.decode_tokens, fresh=True, force=True)
    step("long conversation, prefill")
    long = ask(conversation(workload), 1, fresh=True)
    step("follow-up turn")
    follow = ask(followup_conversation(workload), 1, fresh=False)

    info = engine.info
    return {
        "model": model_name or info.name,
        "path": str(info.path),
        "device": info.device,
        "dtype": info.dtype,
        "quantize": getattr(info, "quantize", None) or quantize,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_s": load_s,
        "first_ttft_s": first.timings.ttft_s,
        "ttft_s": dec.timings.ttft_s,
        "short_prompt_tokens": dec.usage.prompt_tokens,
        "short_prefill_tok_s": dec.timings.prefill_tok_s,
        "long_prompt_tokens": long.usage.prompt_tokens,
        "long_prefill_s": long.timings.prefill_s,
        "long_prefill_tok_s": long.timings.prefill_tok_s,
        "decode_tokens": dec.usage.completion_tokens,
        "decode_tok_s": dec.timings.decode_tok_s,
        "decode_total_s": dec.timings.ttft_s + dec.timings.decode_s,
        "followup_prompt_tokens": follow.usage.prompt_tokens,
        "followup_cached_tokens": follow.usage.cached_tokens,
        "followup_ttft_s": follow.timings.ttft_s,
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 1e6 if cuda else None,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) pairs for a table, in display order."""
    out = []
    for key, (label, unit) in FIELDS.items():
        value = result.get(key)
        if value is None:
            continue
        text = f"{value:,}" if isinstance(value, int) else f"{value:,.3f}" if unit == "s" else f"{value:,.1f}"
        out.append((label, f"{text} {unit}"))
    return out


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


__all__ = ["FIELDS", "FULL", "INFO_KEYS", "QUICK", "Workload", "as_json", "conversation", "run", "rows"]
