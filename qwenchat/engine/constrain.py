"""Structured output: a grammar (a JSON schema, or any JSON object) that the sampled tokens
must follow, enforced by masking the logits before sampling, through llguidance.

Contract
--------
    guide = Guidance(tokenizer, eos_ids)             # one per engine; the vocabulary is read lazily
    grammar = guide.compile(schema_or_"json_object")  # validates: SettingsError naming the problem
    constraint = grammar.start(vocab_size, device)    # one per reply
    token = sampler(constraint.apply(logits))         # only tokens that keep the output valid
    constraint.advance(tid)                           # after every sampled token
    constraint.done                                   # the grammar is complete: stop here

Why llguidance (benchmarks/constrain_libs.py, README "Structured output"): its mask takes tens of
microseconds a token on the Qwen2 vocabulary (as xgrammar's; a decode step takes tens of
milliseconds), a schema compiles in about a millisecond, it handles any JSON (recursive), reads the
vocabulary straight from tokenizer.json and depends on nothing.

The mask is computed on the host into a preallocated bitmask, expanded to one flag a token and
copied to the logits' device: one small copy a token, no extra host sync. Logit rows past the
tokenizer's vocabulary (padding) are never allowed. End-of-sequence is allowed exactly when the
output is complete, so a reply ends with valid JSON or is cut by the token limit ("length").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch

from qwenchat.engine.errors import ModelOutputError, SettingsError
from qwenchat.engine.schema_grammar import check_spec, import_llguidance
from qwenchat.engine.tokenizer import Tokenizer


class Guidance:
    """The engine's link to llguidance: its view of the vocabulary, built on first use (about a
    second or two for Qwen2's 151,646 tokens) and then kept."""

    def __init__(self, tokenizer: Tokenizer, eos_ids: frozenset[int]) -> None:
        self._tokenizer = tokenizer
        self._eos_ids = sorted(eos_ids)
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None

    def compile(self, spec: object) -> Grammar:
        return Grammar(check_spec(spec), self)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode_plain(text)

    def ll_tokenizer(self) -> Any:
        with self._lock:
            if self._ll_tokenizer is None:
                llguidance = import_llguidance()
                self._ll_tokenizer = llguidance.LLTokenizer(
                    self._tokenizer.backend_json(), eos_token=self._eos_ids or None
                )
            return self._ll_tokenizer


@dataclass(frozen=True)
class Grammar:
    """A checked grammar, ready to constrain replies."""

    text: str
    guidance: Guidance
    prefix: str = ""  # reply text already written under this grammar (a cut reply continued)

    def start(self, vocab_size: int, device: torch.device) -> Constraint:
        return Constraint(self, vocab_size, device)


class Constraint:
    """One reply's grammar state: which tokens may come next."""

    def __init__(self, grammar: Grammar, vocab_size: int, device: torch.device) -> None:
        llguidance = import_llguidance()
        tok = grammar.guidance.ll_tokenizer()
        self._matcher = llguidance.LLMatcher(tok, grammar.text, log_level=0)
        self._check()
        if grammar.prefix and not self._matcher.consume_tokens(grammar.guidance.encode(grammar.prefix)):
            raise SettingsError("the reply to continue does not follow its output constraint (JSON schema)",
                                "regenerate the reply instead")
        n = min(tok.vocab_size, vocab_size)
        self._words = torch.zeros((n + 31) // 32, dtype=torch.int32)  # the library's bitmask
        self._bits = torch.arange(32, dtype=torch.int32)
        self._n, self._vocab_size, self._device = n, vocab_size, device

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) logits -> the same with every token the grammar forbids at -inf."""
        self._matcher.unsafe_compute_mask_ptr(self._words.data_ptr(), self._words.numel() * 4)
        self._check()
        allowed = ((self._words.view(-1, 1) >> self._bits) & 1).view(-1)[: self._n].bool()
        if self._n < self._vocab_size:  # padding rows of the embedding: never text
            allowed = torch.cat([allowed, allowed.new_zeros(self._vocab_size - self._n)])
        return logits.masked_fill(~allowed.to(logits.device, non_blocking=True), float("-inf"))

    def advance(self, token_id: int) -> None:
        """Record a sampled token (one the mask allowed)."""
        if not self._matcher.consume_token(token_id):
            self._check()
            raise ModelOutputError(f"token {token_id} broke the output grammar",
                                   "this is a bug in structured output: please report it")

    @property
    def done(self) -> bool:
        """The output is complete and nothing but end-of-sequence may follow."""
        return self._matcher.is_stopped()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise _schema_error(self._matcher.get_error())
