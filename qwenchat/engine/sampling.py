"""Next-token sampling: turn one step's logits into one token id.

Contract
--------
`SamplingParams` holds the user's settings; `validate()` raises `SettingsError` naming the
setting, the value and its range (records.OPTION_RANGES, the one declaration). `Sampler(params, vocab_size, device)` is built once per
generation setting and then used per reply:

    sampler.reset(prompt_ids)        # start of a reply: presence set + re-seeded generator
    tok = sampler(logits)            # (V,) float32 on `device` -> 0-d int64 on `device`

Processing follows transformers' order and semantics exactly (tests compare against its
processors):

    repetition penalty -> temperature -> top-k -> top-p -> min-p -> a draw (inverse CDF)

- repetition penalty: over every distinct token seen so far (prompt + context + generated);
  positive logits are divided by the penalty, negative ones multiplied.
- temperature 0 means greedy: argmax after the repetition penalty; the other stages are moot.
- top-k keeps every token scoring >= the k-th best (ties at the boundary survive).
- top-p sorts ascending and removes tokens whose cumulative probability is <= 1 - p, always
  keeping the most likely one (transformers' TopPLogitsWarper, ties and edges included).
- min-p keeps tokens with probability >= min_p * the top probability.

Numerics: scores are warped in float32, and every setting in range yields a valid token for
any finite scores: when the warped distribution is unusable (a vanishing temperature overflows,
everything is removed) the token is the argmax of the penalized scores. Scores the model itself
got wrong (NaN, +inf, all -inf) give `INVALID_SCORES`, which `generate.stream` reports.

Stages that are off are not run at all. `__call__` runs once per decoded token, so on a GPU it
never syncs with the host (no `.item()`, no Python loop over the vocabulary, no `unique` over a
growing history): the presence set is a preallocated boolean mask of size V updated in place.
The vocabulary may be wider than the tokenizer (padding rows); nothing special-cases that.

On the CPU, where reading a value costs nothing, top-k and top-p first narrow the vocabulary to
its best candidates (`narrow`): sorting 151,936 scores for top-p and drawing from all of them
took 14 ms and 3.6 ms a token on a 2-core EPYC, more than a third of a 0.5B model's step. The
kept set and its probabilities are the full computation's, up to float summation order; ties at
the top-k boundary and a top-p mass spread past NARROW_TOP_P candidates take the full path.

Reproducibility: with a seed, the same logits sequence yields the same tokens every run (on
the same device type); `reset` re-seeds, so each reply with a given seed starts identically.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from qwenchat.engine.errors import SettingsError
from qwenchat.engine.records import OPTION_RANGES

_NEG_INF = float("-inf")
# What `Sampler.__call__` returns when the model's own scores are unusable (NaN, +inf, or all
# -inf): the caller checks the id it reads anyway, so this costs no extra host sync.
INVALID_SCORES = -1

Stage = Callable[[torch.Tensor], torch.Tensor]
# top-p without top-k narrows to this many candidates when they hold more than the kept mass
NARROW_TOP_P = 1024
# their mass must pass top_p by this much, so float summation order cannot move the boundary
_MASS_MARGIN = 1e-4


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy (argmax after the repetition penalty)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    seed: int | None = None  # None = fresh entropy at every reset

    def validate(self) -> None:
        """Raise SettingsError for the first setting outside its range (records.OPTION_RANGES)."""
        for name, hint in _HINTS.items():
            value = getattr(self, name)
            if name == "seed" and value is None:
                continue
            allowed = OPTION_RANGES[name]
            if value not in allowed:
                raise SettingsError(f"{name} must be {allowed.describe()}, got {value!r}", hint)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


_HINTS = {
    "temperature": "use 0 for greedy (deterministic) output, around 0.7 for chat",
    "top_k": "typical values are 20-50; use 0 to disable",
    "top_p": "typical values are 0.8-0.95; use 1 to disable",
    "min_p": "typical values are 0.05-0.1; use 0 to disable",
    "repetition_penalty": "values slightly above 1 (e.g. 1.05) discourage repeats; use 1 to disable",
    "seed": "any non-negative integer works, e.g. 42; leave it unset for random output",
}


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# --- apply-functions: (V,) logits in, (V,) logits out; -inf marks a removed token -----------


def apply_repetition_penalty(
    logits: torch.Tensor, presence: torch.Tensor, penalty: float
) -> torch.Tensor:
    # Dividing a negative logit would raise it, so negatives are multiplied instead.
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(presence, penalized, logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    # Threshold at the k-th best value (not "exactly k tokens"): ties at the boundary stay,
    # as in transformers. Slicing keeps the threshold on the device (no .item()).
    kth = torch.topk(logits, k).values[-1:]
    return logits.masked_fill(logits < kth, _NEG_INF)


def apply_top_p(logits: torch.Tensor, top_p: float, outside: torch.Tensor | None = None) -> torch.Tensor:
    # Same computation as transformers' TopPLogitsWarper, ascending sort included: the
    # float32 cumulative sums and the `<=` decide edge cases, so the set kept is identical.
    # `outside`: the probability of tokens left out of `logits`, all below them (Sampler.narrow).
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    probs = sorted_logits.softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1) if outside is None else probs.mul(1.0 - outside).cumsum(dim=-1).add(outside)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[-1:] = False  # the most likely token always survives
    remove = remove_sorted.scatter(0, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, _NEG_INF)


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    # min_p <= 1, so the top token always passes its own threshold.
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, _NEG_INF)


def keep_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Greedy as a distribution: everything but the (first) argmax becomes -inf."""
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(0, torch.argmax(logits).view(1), True)
    return logits.masked_fill(~keep, _NEG_INF)


# --- the sampler -----------------------------------------------------------------------------


class Sampler:
    """Composes the active apply-functions for one `SamplingParams` and samples from them."""

    def __init__(
        self, params: SamplingParams, vocab_size: int, device: torch.device | str = "cpu"
    ) -> None:
        params.validate()
        if not _is_int(vocab_size) or vocab_size <= 0:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        self.params = params
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        # Presence set as a mask so recording a token is one in-place scatter on the device.
        self._presence = torch.zeros(vocab_size, dtype=torch.bool, device=self.device)
        self._generator = torch.Generator(device=self.device)
        self._sums = torch.float32 if self.device.type == "mps" else torch.float64  # the draw's CDF
        self._seed = 0
        self._penalize = params.repetition_penalty != 1.0
        self._penalty_stages = self._build_penalty_stages()
        self._warp_stages = self._build_warp_stages()
        self.reset(())

    def _build_penalty_stages(self) -> tuple[Stage, ...]:
        if not self._penalize:
            return ()
        return (
            partial(
                apply_repetition_penalty,
                presence=self._presence,
                penalty=self.params.repetition_penalty,
            ),
        )

    def _build_warp_stages(self) -> tuple[Stage, ...]:
        p = self.params
        if p.greedy:
            return ()  # the distribution is a point mass; nothing else matters
        stages: list[Stage] = []
        if p.temperature != 1.0:
            stages.append(partial(apply_temperature, temperature=p.temperature))
        # top_k >= V keeps everything (transformers clamps k to V), so it is off too.
        if 0 < p.top_k < self.vocab_size:
            stages.append(partial(apply_top_k, k=p.top_k))
        if p.top_p < 1.0:
            stages.append(partial(apply_top_p, top_p=p.top_p))
        if p.min_p > 0.0:
            stages.append(partial(apply_min_p, min_p=p.min_p))
        return tuple(stages)

    @property
    def seed(self) -> int:
        """The seed used by the last `reset` (params.seed, or the fresh one drawn)."""
        return self._seed

    def reset(self, context_ids: Sequence[int]) -> None:
        """Start a reply: presence set = distinct ids of prompt + context; re-seed."""
        self._presence.zero_()
        if self._penalize:
            # Ids the model cannot output (beyond its vocab) cannot be penalized; transformers
            # drops them the same way. Host-side work, once per reply, is fine here.
            ids = sorted({int(i) for i in context_ids})
            if ids and ids[0] < 0:
                raise ValueError(f"token ids must be >= 0, got {ids[0]}")
            ids = [i for i in ids if i < self.vocab_size]
            if ids:
                index = torch.tensor(ids, dtype=torch.long, device=self.device)
                self._presence.index_fill_(0, index, True)
        seed = self.params.seed
        self._seed = secrets.randbits(63) if seed is None else seed
        self._generator.manual_seed(self._seed)

    def _penalized(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # no-op for float32; half-precision logits are warped in float32
        for stage in self._penalty_stages:
            logits = stage(logits)
        return logits

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) logits -> the logits actually sampled from (-inf = removed). Pure: records
        nothing. In greedy mode only the argmax survives."""
        logits = self._penalized(logits)
        return keep_argmax(logits) if self.params.greedy else self._warped(logits)

    def _warped(self, logits: torch.Tensor) -> torch.Tensor:
        for stage in self._warp_stages:
            logits = stage(logits)
        return logits

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) logits -> 0-d int64 token id on the same device; records it as seen.

        Numerically safe for every setting in range, all on the device: when the warped
        distribution is unusable (a temperature so small that the scaled scores overflow, every
        token removed), the token is the argmax of the penalized scores, the limit the settings
        tend to. When the model's own scores are unusable (any NaN or +inf, or all -inf), the
        result is INVALID_SCORES for the caller to report."""
        raw = logits.float()
        unusable = ~(raw < float("inf")).all() | (raw == _NEG_INF).all()  # NaN fails `<` too
        penalized = self._penalized(raw)
        best = torch.argmax(penalized)
        if self.params.greedy:
            token = best
        else:
            narrowed = self.narrow(penalized) if self.device.type == "cpu" else None
            scores, ids = narrowed if narrowed is not None else (self._warped(penalized), None)
            drawn, usable = self._draw(scores)
            token = torch.where(usable, drawn if ids is None else ids[drawn], best)
        if self._penalize:
            self._presence.index_fill_(0, token.view(1), True)
        return torch.where(unusable, torch.full_like(token, INVALID_SCORES), token)

    def _draw(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An index into `scores` (warped logits) drawn from their softmax, and whether that
        distribution was usable (when not, the index means nothing). Inverse CDF over float64
        sums: one uniform number, no sort; torch.multinomial took 3.6 ms over 151,936 scores
        on a 2-core EPYC, this 0.2 ms. (float32 sums on MPS, which has no float64.)"""
        probs = torch.softmax(scores, dim=-1)
        usable = torch.isfinite(probs).all()
        cdf = torch.where(usable, probs, 0.0).to(self._sums).cumsum(dim=-1)
        u = torch.rand(1, generator=self._generator, dtype=self._sums, device=self.device) * cdf[-1]
        drawn = torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1).view(())
        return drawn, usable

    def narrow(self, penalized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The warped scores of the only tokens that can be drawn, and their ids, or None when the
        full vocabulary must be warped (no top-k or top-p, ties at the top-k boundary, scores not
        all finite, top-p's mass spread wide). Reads values on the host: for the CPU."""
        p, V = self.params, self.vocab_size
        # temperature first, as transformers does: dividing can make distinct scores tie
        tempered = penalized if p.temperature == 1.0 else apply_temperature(penalized, p.temperature)
        if 0 < p.top_k < V:
            scores, ids = torch.topk(tempered, p.top_k)
            if not bool(torch.isfinite(scores).all()) or int((tempered >= scores[-1]).sum()) > p.top_k:
                return None
            tail = None  # every token outside the top k is removed, and holds nothing
        elif p.top_p < 1.0:
            scores, ids = torch.topk(tempered, min(NARROW_TOP_P, V))
            if not bool(torch.isfinite(tempered).all()):
                return None
            mass = torch.exp(scores - torch.logsumexp(tempered, dim=0)).sum()
            if not float(mass) > p.top_p + _MASS_MARGIN:  # NaN too (a vanishing temperature)
                return None
            tail = 1.0 - mass  # the ascending cumulative sum starts with what lies outside
        else:
            return None
        if p.top_p < 1.0:
            scores = apply_top_p(scores, p.top_p, tail)
        if p.min_p > 0.0:
            scores = apply_min_p(scores, p.min_p)
        return scores, ids
