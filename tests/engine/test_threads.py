"""The decode thread chooser (engine/threads.py), driven by fake step times: it picks the faster
count, re-checks, follows a change of load, does not flip-flop on noise, and obeys a pinned count."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from qwenchat.engine.errors import SettingsError
from qwenchat.engine.threads import GPU_HOST_THREADS, ProbeSchedule, ThreadChooser, chooser_for, gpu_host, ladder, pinned_count

IDLE = {2: 0.024, 1: 0.045}  # seconds a step: two threads ~2x faster (this 2-core machine, idle)
BUSY = {2: 0.600, 1: 0.053}  # one core busy elsewhere: every barrier waits for a descheduled thread


class Run:
    """Decodes with a chooser whose step times come from `times(step, count)`; records the counts."""

    def __init__(self, chooser: ThreadChooser) -> None:
        self.chooser, self.counts, self.applied, self.seconds = chooser, [], [], 0.0
        chooser._apply = self.applied.append

    def steps(self, n: int, times: Callable[[int, int], float]) -> None:
        for _ in range(n):
            count = self.chooser.count()
            step = times(len(self.counts), count)
            self.counts.append(count)
            self.seconds += step
            self.chooser.record(step)


def table(t: dict[int, float], noise: float = 0.0, seed: int = 0) -> Callable[[int, int], float]:
    rng = random.Random(seed)
    return lambda _step, count: t[count] * (1 + rng.uniform(-noise, noise))


def test_ladder_tries_one_fewer_then_halvings():
    assert ladder(1) == (1,)
    assert ladder(2) == (1, 2)
    assert ladder(4) == (1, 2, 3, 4)
    assert ladder(16) == (1, 2, 4, 8, 15, 16)


def test_keeps_all_threads_on_an_idle_machine_and_probes_rarely():
    run = Run(ThreadChooser((1, 2)))
    run.steps(2000, table(IDLE, noise=0.1))
    assert run.chooser.current == 2
    assert run.chooser.switches == 0
    assert 0 < run.counts.count(1) <= 8  # it did look, a step each time
    assert "1, 1" not in str(run.counts)
    assert run.seconds < 1.005 * len(run.counts) * IDLE[2]


def test_looks_cost_little_in_a_short_session_too():
    run = Run(ThreadChooser((1, 2)))
    run.steps(130, table(IDLE, noise=0.1))  # four 32-token replies, as benchmarks/busy_core.py runs
    assert run.seconds < 1.03 * len(run.counts) * IDLE[2]


def test_moves_to_one_thread_when_a_core_is_busy():
    run = Run(ThreadChooser((1, 2)))
    run.steps(500, table(BUSY, noise=0.2))
    assert run.chooser.current == 1
    assert run.counts[-400:].count(2) <= 3  # re-checks are rare and each is one slow step
    assert run.seconds < 1.3 * 500 * BUSY[1]


def test_follows_the_load_as_it_comes_and_goes():
    schedule = ProbeSchedule()
    run = Run(ThreadChooser((1, 2), schedule))
    run.steps(300, table(IDLE))
    assert run.chooser.current == 2
    start = len(run.counts)
    run.steps(300, table(BUSY))  # a build starts on the other core
    first_one = run.counts.index(1, start)
    assert first_one - start <= schedule.window  # the slowdown trips a probe at once
    assert run.chooser.current == 1
    run.steps(schedule.max_hold + 200, table(IDLE))  # the build ends: found at the next probe
    assert run.chooser.current == 2
    assert run.counts[-100:].count(2) >= 90  # the probes of one thread go on, rarely


def test_no_flip_flopping_when_counts_are_about_equal():
    run = Run(ThreadChooser((1, 2)))
    run.steps(3000, table({1: 0.030, 2: 0.031}, noise=0.15, seed=3))
    assert run.chooser.switches <= 2


def test_a_probe_that_starts_far_slower_is_cut_short():
    """Under load a probe of two threads costs one step (its settle step), not a window."""
    schedule = ProbeSchedule()
    run = Run(ThreadChooser((1, 2), schedule, start=1))
    run.steps(1000, table(BUSY))
    runs_of_two, n = [], 0
    for c in run.counts + [1]:
        if c == 2:
            n += 1
        elif n:
            runs_of_two.append(n)
            n = 0
    assert runs_of_two and max(runs_of_two) == 1


def test_a_noisy_load_at_one_thread_costs_few_probes():
    """At the fewest threads a slowdown cannot be helped by fewer: no early probes of more."""
    rng = random.Random(5)
    run = Run(ThreadChooser((1, 2), start=1))
    run.steps(3000, lambda _s, c: BUSY[c] * (1 + 2 * rng.random()) if c == 1 else BUSY[c])
    assert run.counts[100:].count(2) <= 6  # the scheduled probes only: holds of 32, 64, ... 1024


def test_short_replies_adapt_too():
    """A reply of a few tokens is shorter than a probe: measurements carry over to the next."""
    run = Run(ThreadChooser((1, 2)))
    for _ in range(30):
        run.chooser.begin()
        run.steps(3, table(BUSY))
    assert run.chooser.current == 1
    assert run.counts[-30:].count(2) <= 1


def test_a_prompt_runs_at_the_chosen_count_even_when_a_reply_ended_mid_probe():
    run = Run(ThreadChooser((1, 2), ProbeSchedule(window=4, settle=0, first_hold=8)))
    run.steps(200, table(IDLE))
    while run.chooser._trial is None:  # stop where a probe times its challenger
        run.steps(1, table(IDLE))
    assert run.chooser.running == 1 and run.chooser.current == 2
    run.chooser.begin()  # the next reply's prompt
    assert run.applied[-1] == 2
    assert run.chooser.count() == 1  # its decode steps finish the probe


def test_applies_a_count_only_when_it_changes():
    run = Run(ThreadChooser((1, 2)))
    run.steps(200, table(IDLE))
    changes = sum(1 for a, b in zip(run.counts, run.counts[1:]) if a != b)
    assert len(run.applied) == changes + 1


def test_begin_applies_again_on_a_new_reply():
    """Another thread may decode the next reply: its libgomp count must be set there too."""
    run = Run(ThreadChooser((1, 2)))
    run.steps(10, table(IDLE))
    before = len(run.applied)
    run.chooser.begin()
    assert len(run.applied) == before + 1
    assert run.applied[-1] == run.chooser.current


def test_a_pinned_count_never_changes():
    run = Run(chooser_for(2, {"QWENCHAT_THREADS": "1"}))
    run.steps(300, table(IDLE))
    assert set(run.counts) == {1}
    assert not run.chooser.adaptive


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None), ({"QWENCHAT_THREADS": "3"}, 3), ({"OMP_NUM_THREADS": "2"}, 2),
    ({"OMP_NUM_THREADS": "4,2"}, 4), ({"QWENCHAT_THREADS": "1", "OMP_NUM_THREADS": "2"}, 1),
    ({"QWENCHAT_THREADS": " "}, None),
])  # fmt: skip
def test_pinned_count_from_the_environment(env, expected):
    assert pinned_count(env) == expected


@pytest.mark.parametrize("raw", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_is_a_clear_error(raw):
    with pytest.raises(SettingsError, match="QWENCHAT_THREADS") as err:
        pinned_count({"QWENCHAT_THREADS": raw})
    assert "whole number" in err.value.hint


@pytest.mark.parametrize(("env", "expected"), [
    ({}, GPU_HOST_THREADS), ({"QWENCHAT_THREADS": "3"}, 3), ({"OMP_NUM_THREADS": "2"}, 2),
])  # fmt: skip
def test_gpu_steps_take_a_fixed_few_host_threads_unless_pinned(env, expected):
    chooser = gpu_host(env)
    assert chooser.counts == (expected,) and not chooser.adaptive


def test_a_model_off_the_cpu_decodes_with_the_gpu_host_count():
    """generate's choice by the cache's device (a meta-device cache stands for a GPU's)."""
    import torch

    from qwenchat.engine.cache import KVCache
    from qwenchat.engine.generate import _chooser

    gpu_cache = KVCache(2, 2, 64, 16, torch.float32, torch.device("meta"))
    cpu_cache = KVCache(2, 2, 64, 16, torch.float32, torch.device("cpu"))
    mine = ThreadChooser((1, 2))
    assert _chooser(mine, gpu_cache) is gpu_host() and not gpu_host().adaptive
    assert _chooser(mine, cpu_cache) is mine


def test_a_gpu_reply_leaves_a_later_cpu_engine_all_its_threads(torch_threads):
    """The GPU chooser sets torch to one thread process-wide; the CPU chooser made afterwards still
    climbs from torch's own count, and applies it at its first reply."""
    import torch

    from qwenchat.engine import threads

    default = threads.torch_default_count()
    previous = threads.use(None)
    try:
        gpu_host({}).begin()
        assert torch.get_num_threads() == 1
        cpu = threads.shared()
        assert cpu.counts == chooser_for(default).counts
        cpu.begin()
        assert torch.get_num_threads() == cpu.running
    finally:
        threads.use(previous)


def test_inconsistent_schedule_is_refused():
    with pytest.raises(ValueError):
        ProbeSchedule(window=0)
    with pytest.raises(ValueError):
        ProbeSchedule(first_hold=64, max_hold=32)


# -- in the decode loop (generate.stream), on the tiny model ---------------------------------------

class Alternating(ThreadChooser):
    """Changes the count at every step (1, 2, 3, ...): the worst case of adaptation for numerics."""

    def __init__(self, counts: tuple[int, ...]) -> None:
        super().__init__(counts)
        self.steps = 0

    def count(self) -> int:
        self.current = self.counts[self.steps % len(self.counts)]
        self.steps += 1
        return super().count()

    def record(self, seconds: float) -> None:
        pass


def _greedy(engine, chooser: ThreadChooser, n: int = 40) -> list[int]:
    from qwenchat.engine.generate import GenerationSettings, stream
    from qwenchat.engine.records import Reply
    from qwenchat.engine.sampling import SamplingParams

    engine.reset_cache()
    settings = GenerationSettings(SamplingParams(temperature=0.0), n, frozenset())
    (reply,) = [r for r in stream(engine.model, engine.cache, engine.tokenizer, [11, 12, 13, 14], settings,
                                  threads=chooser) if isinstance(r, Reply)]  # fmt: skip
    return reply.token_ids


@pytest.fixture
def torch_threads():
    import torch

    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def tiny_int8(tiny_models, tmp_path_factory):
    from qwenchat.engine.chat import ChatEngine

    return ChatEngine.load(tiny_models["qwen25_05b"], device="cpu", quantize="int8",
                           kernel_dir=tmp_path_factory.mktemp("kernels"))  # fmt: skip


def test_each_decode_step_runs_at_the_chosen_count(tiny_int8, torch_threads, monkeypatch):
    import torch

    chooser, seen = Alternating((1, 2, 3)), []
    step = tiny_int8.model.forward
    monkeypatch.setattr(tiny_int8.model, "forward", lambda *a, **k: seen.append(torch.get_num_threads()) or step(*a, **k))
    tokens = _greedy(tiny_int8, chooser, n=10)
    assert len(tokens) == 10
    assert seen[1:] == [1, 2, 3, 1, 2, 3, 1, 2, 3]  # seen[0]: the prompt


def test_greedy_tokens_are_the_same_with_the_count_changing_every_step(tiny_int8, torch_threads):
    fixed = _greedy(tiny_int8, ThreadChooser((2,)))
    assert _greedy(tiny_int8, Alternating((1, 2, 3))) == fixed
    assert _greedy(tiny_int8, ThreadChooser((1, 2))) == fixed  # adaptive, on this machine's timings


def test_the_chooser_gets_every_decode_steps_time(tiny_int8, torch_threads):
    recorded: list[float] = []

    class Recording(ThreadChooser):
        def record(self, seconds: float) -> None:
            recorded.append(seconds)

    _greedy(tiny_int8, Recording((1, 2)), n=12)
    assert len(recorded) == 11 and all(s > 0 for s in recorded)  # the first token comes from the prompt
