"""Sampling matches transformers' logits processors, is reproducible, samples the warped
distribution, rejects invalid settings, and stays free of host syncs in the decode loop."""

from __future__ import annotations

import math

import pytest
import torch
import transformers.generation.logits_process as tlp  # a declared test dependency
from torch.utils._python_dispatch import TorchDispatchMode

from qwenchat.engine.errors import SettingsError
from qwenchat.engine import sampling
from qwenchat.engine.sampling import Sampler, SamplingParams

V = 1000


def reference_processors(p: SamplingParams) -> "tlp.LogitsProcessorList":
    """What transformers' generate() would build for these settings, in its order."""
    procs = tlp.LogitsProcessorList()
    if p.repetition_penalty != 1.0:
        procs.append(tlp.RepetitionPenaltyLogitsProcessor(float(p.repetition_penalty)))
    if p.temperature != 1.0:
        procs.append(tlp.TemperatureLogitsWarper(float(p.temperature)))
    if p.top_k > 0:
        procs.append(tlp.TopKLogitsWarper(p.top_k))
    if p.top_p < 1.0:
        procs.append(tlp.TopPLogitsWarper(p.top_p))
    if p.min_p > 0.0:
        procs.append(tlp.MinPLogitsWarper(p.min_p))
    return procs


def reference_warp(p: SamplingParams, logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
    input_ids = torch.tensor([ids], dtype=torch.long)
    return reference_processors(p)(input_ids, logits.clone().unsqueeze(0)).squeeze(0)


def random_logits(gen: torch.Generator, kind: str) -> torch.Tensor:
    if kind == "normal":  # spread enough that top-p / min-p cut somewhere interesting
        return torch.randn(V, generator=gen) * 3.0
    if kind == "peaked":  # one dominant token
        x = torch.randn(V, generator=gen)
        x[int(torch.randint(V, (1,), generator=gen))] += 12.0
        return x
    if kind == "ties":  # many exact ties: exercises tie rules at top-k / top-p boundaries
        return torch.randint(-4, 5, (V,), generator=gen).float()
    raise AssertionError(kind)


def assert_same_distribution(ours: torch.Tensor, ref: torch.Tensor) -> None:
    kept, ref_kept = torch.isfinite(ours), torch.isfinite(ref)
    assert torch.equal(kept, ref_kept), (
        f"kept sets differ: ours-only {torch.nonzero(kept & ~ref_kept).flatten().tolist()}, "
        f"ref-only {torch.nonzero(ref_kept & ~kept).flatten().tolist()}"
    )
    torch.testing.assert_close(
        torch.softmax(ours, -1), torch.softmax(ref, -1), atol=1e-6, rtol=0
    )


SETTINGS = {
    "defaults": SamplingParams(),
    "temperature": SamplingParams(temperature=0.7),
    "hot": SamplingParams(temperature=1.8),
    "top_k": SamplingParams(top_k=20),
    "top_k_1": SamplingParams(top_k=1),
    "top_p": SamplingParams(top_p=0.8),
    "top_p_tiny": SamplingParams(top_p=1e-6),
    "min_p": SamplingParams(min_p=0.05),
    "min_p_1": SamplingParams(min_p=1.0),
    "penalty": SamplingParams(repetition_penalty=1.3),
    "reward": SamplingParams(repetition_penalty=0.7),
    "qwen_defaults": SamplingParams(
        temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05
    ),
    "everything": SamplingParams(
        temperature=0.9, top_k=50, top_p=0.9, min_p=0.02, repetition_penalty=1.2
    ),
    "k_and_p": SamplingParams(top_k=100, top_p=0.5),
    "p_and_min_p": SamplingParams(temperature=1.3, top_p=0.95, min_p=0.1),
}


@pytest.mark.parametrize("kind", ["normal", "peaked", "ties"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_warp_matches_transformers(name: str, kind: str) -> None:
    params = SETTINGS[name]
    gen = torch.Generator().manual_seed(1234)
    context = torch.randint(V, (40,), generator=gen).tolist()
    sampler = Sampler(params, V)
    sampler.reset(context)
    generated: list[int] = []
    # A short decode loop, so the presence set also covers tokens the sampler recorded itself.
    for _ in range(8):
        logits = random_logits(gen, kind)
        before = logits.clone()
        ours = sampler.warp(logits)
        assert torch.equal(logits, before), "warp must not modify its input"
        assert_same_distribution(ours, reference_warp(params, logits, context + generated))
        generated.append(int(sampler(logits)))


@pytest.mark.parametrize("kind", ["normal", "peaked", "ties"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_cpus_narrowed_candidates_carry_transformers_distribution(monkeypatch, name: str, kind: str) -> None:
    """Sampler.narrow (the CPU's shortcut past sorting the vocabulary) keeps the same tokens with
    the same probabilities as the full computation, or declines (ties at the top-k boundary, a
    top-p mass spread past its candidates)."""
    monkeypatch.setattr(sampling, "NARROW_TOP_P", 64)  # V is 1000 here: make the tail count
    params = SETTINGS[name]
    gen = torch.Generator().manual_seed(99)
    context = torch.randint(V, (40,), generator=gen).tolist()
    sampler = Sampler(params, V)
    sampler.reset(context)
    narrowed = [sampler.narrow(sampler._penalized(random_logits(gen, kind))) for _ in range(6)]
    gen = torch.Generator().manual_seed(99)
    torch.randint(V, (40,), generator=gen)
    # Exact ties inside top-p's cut: which of the tied tokens survives depends on the sort
    # (transformers' own choice is unspecified), so only the number kept is compared.
    tied_top_p = kind == "ties" and params.top_p < 1.0
    for got in narrowed:
        logits = random_logits(gen, kind)
        if got is None:
            continue
        full = torch.full((V,), float("-inf")).index_put_((got[1],), got[0])
        ref = reference_warp(params, logits, context)
        if tied_top_p:
            assert int(torch.isfinite(full).sum()) == int(torch.isfinite(ref).sum())
        else:
            assert_same_distribution(full, ref)
    if params.top_k == 0 and params.top_p == 1.0:
        assert narrowed == [None] * 6
    elif params.top_k > 0 and kind != "ties":
        assert None not in narrowed, "the shortcut should apply here"
    elif params.top_k > 0:
        assert narrowed == [None] * 6, "ties at the top-k boundary take the full path"


def test_top_p_narrowing_declines_when_the_mass_is_spread_past_its_candidates(monkeypatch) -> None:
    monkeypatch.setattr(sampling, "NARROW_TOP_P", 64)
    sampler = Sampler(SamplingParams(top_p=0.9), V)
    assert sampler.narrow(torch.zeros(V)) is None  # flat: 64 candidates hold 6.4%
    peaked = torch.zeros(V)
    peaked[:10] = 10.0
    scores, ids = sampler.narrow(peaked)
    assert set(ids[torch.isfinite(scores)].tolist()) == set(range(10))


def test_top_k_at_or_above_vocab_keeps_everything() -> None:
    logits = torch.randn(V, generator=torch.Generator().manual_seed(0))
    for k in (V, V + 7):
        params = SamplingParams(top_k=k)
        ours = Sampler(params, V).warp(logits)
        assert torch.isfinite(ours).all()
        assert_same_distribution(ours, reference_warp(params, logits, []))


def test_penalty_divides_positive_and_multiplies_negative() -> None:
    sampler = Sampler(SamplingParams(repetition_penalty=2.0), 6)
    sampler.reset([0, 1, 1, 99])  # duplicates count once; 99 is beyond the vocab: ignored
    logits = torch.tensor([4.0, -4.0, 4.0, -4.0, 0.0, 1.0])
    expected = torch.tensor([2.0, -8.0, 4.0, -4.0, 0.0, 1.0])
    assert torch.equal(sampler.warp(logits), expected)


def test_reset_clears_previous_reply_presence() -> None:
    sampler = Sampler(SamplingParams(repetition_penalty=2.0, temperature=0), 4)
    sampler.reset([0])
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5])
    assert int(sampler(logits)) == 1  # now 1 is "seen" as well
    assert int(sampler(logits)) == 2  # 3/2 = 1.5 < 2
    sampler.reset([])
    assert torch.equal(sampler.warp(logits) == float("-inf"), torch.tensor([1, 0, 1, 1]).bool())
    assert int(sampler(logits)) == 1


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_greedy_is_argmax_after_penalty(penalty: float) -> None:
    # The other warpers are set on purpose: greedy must ignore them.
    params = SamplingParams(
        temperature=0, top_k=3, top_p=0.1, min_p=0.5, repetition_penalty=penalty
    )
    assert params.greedy
    gen = torch.Generator().manual_seed(7)
    context = torch.randint(V, (200,), generator=gen).tolist()
    sampler = Sampler(params, V)
    sampler.reset(context)
    ref = SamplingParams(repetition_penalty=penalty)
    ids = list(context)
    changed = 0
    for _ in range(30):
        logits = random_logits(gen, "normal")
        expected = int(torch.argmax(reference_warp(ref, logits, ids)))
        warped = sampler.warp(logits)
        assert torch.isfinite(warped).sum() == 1 and int(torch.argmax(warped)) == expected
        token = sampler(logits)
        assert token.dtype == torch.int64 and token.dim() == 0
        assert int(token) == expected
        changed += expected != int(torch.argmax(logits))
        ids.append(expected)
    if penalty != 1.0:
        assert changed > 0, "the penalty should have changed at least one greedy choice"


def test_greedy_penalty_steers_away_from_seen_token() -> None:
    sampler = Sampler(SamplingParams(temperature=0, repetition_penalty=1.5), 3)
    sampler.reset([0])
    assert int(sampler(torch.tensor([3.0, 2.5, 1.0]))) == 1


def run_loop(sampler: Sampler, context: list[int], steps: int = 64) -> list[int]:
    gen = torch.Generator().manual_seed(99)  # the "model": same logits sequence every run
    sampler.reset(context)
    return [int(sampler(random_logits(gen, "normal"))) for _ in range(steps)]


REPRO_PARAMS = SamplingParams(temperature=1.2, top_k=200, top_p=0.95, repetition_penalty=1.1)


def test_same_seed_same_tokens() -> None:
    params = SamplingParams(**{**REPRO_PARAMS.__dict__, "seed": 1234})
    context = list(range(0, 500, 7))
    first = run_loop(Sampler(params, V), context)
    again = Sampler(params, V)
    assert run_loop(again, context) == first
    assert run_loop(again, context) == first, "reset must re-seed for the next reply"
    assert again.seed == 1234


def test_different_seeds_differ() -> None:
    runs = {
        tuple(run_loop(Sampler(SamplingParams(**{**REPRO_PARAMS.__dict__, "seed": s}), V), []))
        for s in (1, 2, 3)
    }
    assert len(runs) == 3


def test_no_seed_draws_fresh_entropy() -> None:
    sampler = Sampler(REPRO_PARAMS, V)
    first = run_loop(sampler, [])
    first_seed = sampler.seed
    second = run_loop(sampler, [])
    assert second != first
    assert sampler.seed != first_seed
    # The seed that was drawn (exposed for "reproduce this reply") replays the reply exactly.
    replay = Sampler(SamplingParams(**{**REPRO_PARAMS.__dict__, "seed": sampler.seed}), V)
    assert run_loop(replay, []) == second


# Chi-square critical values at p = 1e-4 (so a wrong sampler fails, a right one has slack).
def _chi2_critical(df: int) -> float:
    # Wilson-Hilferty approximation of the chi-square quantile; z = 3.719 for p = 1e-4.
    z = 3.719
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(seed=5),
        SamplingParams(temperature=0.8, top_k=12, top_p=0.9, min_p=0.05, seed=11),
        SamplingParams(temperature=1.2, top_p=0.7, seed=13),
    ],
    ids=["plain", "combined", "top_p"],
)
def test_empirical_distribution_matches_warp(params: SamplingParams) -> None:
    vocab = 32
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(3)) * 1.5
    sampler = Sampler(params, vocab)
    sampler.reset([])
    probs = torch.softmax(sampler.warp(logits), -1).double()
    draws = 20_000
    counts = torch.zeros(vocab, dtype=torch.float64)
    for _ in range(draws):
        counts[sampler(logits)] += 1
    # Never draws a removed token.
    assert counts[probs == 0].sum() == 0
    kept = probs > 0
    expected = probs[kept] * draws
    assert (expected > 5).all(), "test setup: every kept token should expect > 5 draws"
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    df = int(kept.sum()) - 1
    assert chi2 < _chi2_critical(df), f"chi2={chi2:.1f} df={df}"


INVALID = [
    ("temperature", -0.1),
    ("temperature", float("inf")),
    ("temperature", float("nan")),
    ("top_k", -1),
    ("top_k", 2.5),
    ("top_p", 0.0),
    ("top_p", -0.5),
    ("top_p", 1.01),
    ("top_p", float("nan")),
    ("min_p", -0.01),
    ("min_p", 1.5),
    ("repetition_penalty", 0.0),
    ("repetition_penalty", -1.0),
    ("repetition_penalty", float("inf")),
    ("seed", -1),
    ("seed", 2**64),
    # Beyond the declared ranges (records.OPTION_RANGES): typos or attacks, not settings.
    ("temperature", 1e30),
    ("temperature", 100.5),
    ("top_k", 1_000_001),
    ("top_k", 10**30),
    ("repetition_penalty", 1e30),
    ("repetition_penalty", 1e-30),
    ("repetition_penalty", 0.005),
    ("seed", 10**30),
]


@pytest.mark.parametrize(("field", "value"), INVALID)
def test_invalid_settings_raise(field: str, value: object) -> None:
    params = SamplingParams(**{field: value})
    with pytest.raises(SettingsError) as err:
        params.validate()
    assert field in err.value.message
    assert repr(value) in err.value.message
    assert err.value.hint
    with pytest.raises(SettingsError):
        Sampler(params, V)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0),
        SamplingParams(top_p=1.0, min_p=1.0, top_k=1_000_000),
        SamplingParams(repetition_penalty=0.01, seed=0),
        SamplingParams(temperature=100, repetition_penalty=100, top_p=1e-9),
        SamplingParams(temperature=1e-45),
        SamplingParams(seed=2**64 - 1),
    ],
)
def test_boundary_settings_are_valid(params: SamplingParams) -> None:
    params.validate()


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    # Annotations omitted: this is torch's dispatch-mode hook signature.
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0, repetition_penalty=1.1),
        SamplingParams(temperature=0.7, top_k=20, top_p=0.8, min_p=0.05, repetition_penalty=1.1),
    ],
    ids=["greedy", "everything"],
)
@pytest.mark.parametrize("narrow", [False, True], ids=["device", "cpu"])
def test_call_has_no_host_sync_and_constant_work(monkeypatch, params: SamplingParams, narrow: bool) -> None:
    """A GPU's path (the CPU's narrowing switched off) never syncs; the CPU's reads values, which
    costs nothing there; neither grows with the reply."""
    if not narrow:
        monkeypatch.setattr(Sampler, "narrow", lambda self, penalized: None)
    sampler = Sampler(params, V)
    sampler.reset(list(range(100)))
    logits = torch.randn(V, generator=torch.Generator().manual_seed(0))
    sampler(logits)  # warm-up
    per_step = []
    for _ in range(3):
        with _OpRecorder() as rec:
            sampler(logits)
        # _local_scalar_dense is what .item(), int(), bool() on a tensor dispatch to.
        assert narrow or "_local_scalar_dense" not in rec.ops
        assert not any("unique" in op for op in rec.ops)
        assert "searchsorted" in rec.ops or "argmax" in rec.ops  # the recorder sees the ops
        per_step.append(rec.ops)
    assert per_step[0] == per_step[1] == per_step[2], "work per token must not grow"


def test_off_stages_are_skipped() -> None:
    sampler = Sampler(SamplingParams(), V)
    logits = torch.randn(V)
    with _OpRecorder() as rec:
        sampler.warp(logits)
    assert not {"sort", "topk", "div", "where"} & set(rec.ops)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_call_stays_on_device_without_sync() -> None:
    params = SamplingParams(
        temperature=0.7, top_k=20, top_p=0.8, min_p=0.05, repetition_penalty=1.1, seed=3
    )
    sampler = Sampler(params, V, device="cuda")
    sampler.reset(list(range(50)))
    logits = torch.randn(V, device="cuda")
    sampler(logits)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            token = sampler(logits)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert token.device.type == "cuda" and token.dtype == torch.int64 and token.dim() == 0
    greedy = Sampler(SamplingParams(temperature=0, repetition_penalty=1.1), V, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        greedy(logits)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_narrowing_sees_ties_that_temperature_makes():
    """transformers divides by the temperature before top-k: two scores one float apart can become
    one value, and both then survive a top-k that splits them. The narrowing checks ties after the
    division too, so it declines and the full path keeps both."""
    t = 1.3
    below = (torch.tensor([3.0]).view(torch.int32) - torch.arange(1000, dtype=torch.int32)).view(torch.float32)
    i = int(((below[:-1] / t) == (below[1:] / t)).nonzero()[0])  # neighbours the division makes equal
    a, b = below[i], below[i + 1]
    assert a != b and a / t == b / t
    logits = torch.full((V,), -5.0)
    logits[0], logits[1], logits[2] = 10.0, a, b
    params = SamplingParams(temperature=t, top_k=2)
    sampler = Sampler(params, V)
    assert sampler.narrow(sampler._penalized(logits)) is None
    ref = reference_warp(params, logits, [])
    assert int(torch.isfinite(ref).sum()) == 3
    assert_same_distribution(sampler.warp(logits), ref)
