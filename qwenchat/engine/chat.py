"""`ChatEngine`: a loaded model ready to chat, the engine's one public entry point.

It owns the network, the tokenizer, the chat template and one KV cache. Each `chat()` call
renders the whole conversation, drops the oldest turns if the context window is too small,
and prefills only the tokens after the longest common prefix with what the cache holds (the
previous turns, the reply generated last time), so a follow-up costs only its new tokens, and
edits or regenerations of earlier messages follow the same rule. `complete()` continues raw text
(base models). Both yield `Chunk` records, then one `Reply`.

The engine takes a local HF-format directory; finding or downloading models is not its business.
One `ChatEngine` serves one conversation at a time from one thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from qwenchat.engine import int8_kernel
from qwenchat.engine.cache import KVCache
from qwenchat.engine.config import Qwen2Config
from qwenchat.engine.constrain import Guidance
from qwenchat.engine.checkpoint import Int8Checkpoint, iter_checkpoint
from qwenchat.engine.device import AMX_PROMPTS_ENV, Placement, amx_prompts, choose, choose_quantize
from qwenchat.engine.errors import ContextOverflowError, SettingsError, TemplateError
from qwenchat.engine.generate import GenerationSettings, stream
from qwenchat.engine.generation_config import GenerationDefaults
from qwenchat.engine.kv_pool import DEFAULT_BUDGET_BYTES, CachePool
from qwenchat.engine import model_build
from qwenchat.engine.model import Qwen2ForCausalLM
from qwenchat.engine.model_build import matrix_params, weight_kinds
from qwenchat.engine.records import MIN_CONTEXT, Chunk, GenerateOptions, Reply
from qwenchat.engine.template import ChatTemplate
from qwenchat.engine.tokenizer import Tokenizer

DEFAULT_MAX_NEW_TOKENS = 4096
Message = dict[str, str]


@dataclass(frozen=True)
class EngineInfo:
    name: str
    path: Path
    device: str
    dtype: str
    placement_reason: str  # why: a "device: …", "weights: …" and (quantized) "kernels: …" line
    context_window: int
    has_chat_template: bool
    chat_tuned: bool  # False for base models: they continue raw text (`complete`)
    load_s: float
    quantize: str = "none"  # "int8" / "int4": weight-only quantized matrices (quantize.py, quantize_int4.py)
    notes: tuple[str, ...] = ()  # warnings for the user (a damaged int8 cache rebuilt, an unsafe kernel folder)


class ChatEngine:
    def __init__(
        self,
        model: Qwen2ForCausalLM,
        tokenizer: Tokenizer,
        template: ChatTemplate | None,
        defaults: GenerationDefaults,
        cache: KVCache,
        info: EngineInfo,
        kv_pool_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.defaults, self.cache, self.info = defaults, cache, info
        # other recent conversations' caches: switching back to one prefills only its new tokens
        self.pool = CachePool(kv_pool_bytes)

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        device: str | None = "auto",
        dtype: str | None = "auto",
        max_context: int | None = None,
        quantize: str | None = "auto",
        kernel_dir: Path | None = None,
        int8_cache_dir: Path | None = None,
        kv_pool_bytes: int | None = None,
    ) -> "ChatEngine":
        """quantize: "auto" (int8 on the CPU when the dtype is left to us, else none), "none",
        "int8" (weight-only int8 matrices) or "int4" (group-wise int4; both lossy, guarded by
        tests/real/test_quality_guard.py).
        kernel_dir: where the native int8 kernel is built and cached (None: rebuilt in a
        temporary folder by each process; see int8_kernel.py). int8_cache_dir: the root of the
        int8 weight caches, one folder per model (None: quantized at every load; see
        int8_cache.py). kv_pool_bytes: the budget of other recent conversations' KV caches kept
        for reuse (None: kv_pool.DEFAULT_BUDGET_BYTES; 0: none kept)."""
        t0 = time.perf_counter()
        model_dir = Path(model_dir)
        placement: Placement = choose(device, dtype)
        cfg = Qwen2Config.from_file(model_dir / "config.json")
        quant, quant_reason = choose_quantize(quantize, placement, dtype, matrix_params(cfg))
        window = _context_window(cfg, max_context)
        tokenizer = Tokenizer.from_dir(model_dir)
        template = ChatTemplate.from_dir(model_dir, tokenizer.special_tokens)
        defaults = GenerationDefaults.from_dir(model_dir, extra_eos=(tokenizer.eos_token_id,))
        if defaults.max_new_tokens is None:  # the instruct repos leave it out; never run unbounded
            defaults = replace(defaults, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
        notes: list[str] = []
        kernels: list[str] = []  # what runs the quantized products
        if quant in ("int8", "int4"):
            native = None
            if placement.device.type == "cpu" and placement.dtype == torch.float32:
                status = int8_kernel.load(kernel_dir)
                native = status.kernel
                kernels.append(status.reason)
                notes += [status.note] if status.note else []
            tensors = Int8Checkpoint(model_dir, cfg, weight_kinds(cfg, quant, native is not None), int8_cache_dir, native)
            amx = amx_prompts(placement, quant, tiles=native is not None and native.amx)
            model = model_build.from_tensors(
                cfg, tensors, placement.device, window, placement.dtype, quant, native, amx
            )
            quant_reason += "; read from the weight cache" if tensors.source == "cache" else f"; {tensors.source}"
            kernels += [f"prompt products on the CPU's matrix units ({AMX_PROMPTS_ENV}=0 for float32)"] if amx else []
            notes += [tensors.note] if tensors.note else []
        else:
            tensors = iter_checkpoint(model_dir, cfg, placement.dtype)
            model = model_build.from_tensors(cfg, tensors, placement.device, window, placement.dtype)
        cache = KVCache(
            cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, window, placement.dtype, placement.device
        )
        info = EngineInfo(
            name=model_dir.name,
            path=model_dir,
            device=str(placement.device),
            dtype=placement.dtype_name,
            placement_reason=_reasons(device=placement.reason, weights=quant_reason, kernels="; ".join(kernels)),
            context_window=window,
            has_chat_template=template is not None,
            chat_tuned=_chat_tuned(template, tokenizer, defaults),
            load_s=time.perf_counter() - t0,
            quantize=quant,
            notes=tuple(notes),
        )
        pool = DEFAULT_BUDGET_BYTES if kv_pool_bytes is None else kv_pool_bytes
        return cls(model, tokenizer, template, defaults, cache, info, kv_pool_bytes=pool)

    # -- requests ---------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Message],
        options: GenerateOptions | None = None,
        cancel: threading.Event | None = None,
        continue_last: bool = False,
    ) -> Iterator[Chunk | Reply]:
        """Stream the assistant's reply to `messages` (role/content dicts, oldest first).
        continue_last: the last message is an assistant reply to extend (cut by the token
        limit or interrupted); the stream then carries only the new text. The prompt is the
        conversation before it, the generation prompt, then the reply so far, so the KV cache
        still holds it from the turn that wrote it."""
        settings = self.settings(options)
        if not continue_last:
            ids, dropped = self.chat_prompt(messages, reserve=self.reply_reserve(settings))
            return self._stream(ids, settings, cancel, dropped)
        if not messages or messages[-1].get("role") != "assistant":
            raise SettingsError("there is no reply to continue", "send a message instead")
        ids, dropped = self.chat_prompt(messages[:-1], reserve=self.reply_reserve(settings))
        ids = ids + self.tokenizer.encode_plain(messages[-1].get("content", ""))
        if settings.constraint is not None:  # the grammar resumes after the reply so far
            settings = replace(settings, constraint=replace(settings.constraint, prefix=messages[-1].get("content", "")))
        self._check_fits(len(ids), self.reply_reserve(settings), "the reply to continue")
        return self._stream(ids, settings, cancel, dropped)

    def complete(
        self, text: str, options: GenerateOptions | None = None, cancel: threading.Event | None = None
    ) -> Iterator[Chunk | Reply]:
        """Stream a raw continuation of `text` (no chat template): the mode for base models."""
        settings = self.settings(options)
        ids = self.tokenizer.encode_plain(text)
        if not ids:
            raise SettingsError("the prompt is empty", "give some text to continue")
        self._check_fits(len(ids), self.reply_reserve(settings), "the prompt")
        return self._stream(ids, settings, cancel)

    def _stream(self, ids: list[int], settings: GenerationSettings, cancel: threading.Event | None,
                dropped: int = 0) -> Iterator[Chunk | Reply]:
        self.pool.prepare(self.cache, ids)  # bring back this conversation's cache if put aside
        return stream(self.model, self.cache, self.tokenizer, ids, settings, cancel, dropped)

    # -- building blocks --------------------------------------------------------------------

    def settings(self, options: GenerateOptions | None) -> GenerationSettings:
        """The model's defaults with the request's overrides applied, validated."""
        options = options or GenerateOptions()
        overrides = {
            k: getattr(options, k)
            for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")
            if getattr(options, k) is not None
        }
        sampling = replace(self.defaults.sampling, **overrides)
        sampling.validate()
        max_new = self.defaults.max_new_tokens if options.max_new_tokens is None else options.max_new_tokens
        constraint = None if options.constraint is None else self.guidance.compile(options.constraint)
        return GenerationSettings(sampling, max_new, self.defaults.eos_ids, tuple(options.stop), constraint)

    @property
    def guidance(self) -> Guidance:
        """Structured output's view of this model's vocabulary (built on first use)."""
        if getattr(self, "_guidance", None) is None:
            self._guidance = Guidance(self.tokenizer, self.defaults.eos_ids)
        return self._guidance

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        if self.template is None:
            raise TemplateError(
                f"model {self.info.name} has no chat template",
                "this looks like a base model: use raw completion (--raw), or pick an instruct model",
            )
        return self.template.render([dict(m) for m in messages], add_generation_prompt=add_generation_prompt)

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        rendered = self.render(messages)
        return self.tokenizer.encode_chat(rendered, [m.get("content", "") for m in messages])

    def chat_prompt(self, messages: Sequence[Message], reserve: int) -> tuple[list[int], int]:
        """Token ids of the conversation and how many old messages were left out to fit.

        Whole turns are dropped, oldest first, keeping the system prompt and the last message.
        """
        if not messages:
            raise SettingsError("the conversation is empty", "send a message")
        msgs = list(messages)
        head = msgs[:1] if msgs[0].get("role") == "system" else []
        body = msgs[len(head) :]
        dropped = 0
        while True:
            ids = self.encode_chat(head + body)
            if len(ids) + reserve <= self.info.context_window or len(body) <= 1:
                break
            n = _first_turn_length(body)
            body, dropped = body[n:], dropped + n
        self._check_fits(len(ids), reserve, "the conversation's last message")
        return ids, dropped

    def reset_cache(self) -> None:
        self.cache.reset()
        self.pool.clear()

    def reply_reserve(self, settings: GenerationSettings) -> int:
        # room kept for the reply when fitting a prompt; a quarter of the window at most
        return max(1, min(settings.max_new_tokens, self.info.context_window // 4))

    def _check_fits(self, n_tokens: int, reserve: int, what: str) -> None:
        window = self.info.context_window
        if n_tokens + reserve > window:
            raise ContextOverflowError(
                f"{what} needs {n_tokens} tokens (plus {reserve} for the reply), "
                f"but the context window holds {window}",
                "shorten the input, lower the reply's max tokens, or raise the context limit (up to the model's maximum)",
            )


def _reasons(**why: str) -> str:
    """EngineInfo.placement_reason: one "aspect: why" line per aspect with something to say
    (they were one line of nested parentheses that `ask -u` printed, hard to read)."""
    return "\n".join(f"{aspect}: {text}" for aspect, text in why.items() if text)


def _context_window(cfg: Qwen2Config, max_context: int | None) -> int:
    if max_context is None:
        return cfg.max_position_embeddings
    if max_context < MIN_CONTEXT:
        raise SettingsError(f"context limit {max_context} is too small", f"use at least {MIN_CONTEXT} tokens")
    return min(max_context, cfg.max_position_embeddings)


def _chat_tuned(template: ChatTemplate | None, tokenizer: Tokenizer, defaults: GenerationDefaults) -> bool:
    """Base Qwen2 repos ship the same chat template as the instruct ones, so the template alone
    does not tell; an instruct model also stops on the template's end-of-turn token."""
    end_of_turn = tokenizer.token_id("<|im_end|>")
    return template is not None and (end_of_turn is None or end_of_turn in defaults.eos_ids)


def _first_turn_length(body: list[Message]) -> int:
    """Length of the oldest turn: a message and the replies up to the next user message."""
    n = 1
    while n < len(body) - 1 and body[n].get("role") != "user":
        n += 1
    return n
