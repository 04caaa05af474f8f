"""How many CPU threads a decode step uses, chosen while decoding from the step times measured.

Why: a decode step runs ~150 OpenMP parallel regions (native/decode_step.c, native/int8_kernel.c and torch's
ops share one libgomp pool), each ending in a barrier. On an idle 2-core machine two threads
decode ~2x faster than one; with one core kept busy by another process, the second thread is
descheduled for whole time slices and every barrier waits for it (measured 1.6 tok/s at two
threads against 18.8 at one). No fixed count is right on both, and the load changes while a
reply streams, so `ThreadChooser` times the steps at the current count, now and then tries a
neighbouring count for a few steps, keeps whichever is faster and re-checks later.

Its schedule (`ProbeSchedule`) keeps the cost on an idle machine small: a probe is a few steps,
the wait between probes doubles each time the current count wins again, and a probe whose
first step is already far slower is abandoned. A current count whose steps suddenly slow down
(another process started) is checked against fewer threads at once instead of at the next
scheduled probe.

Pinning: QWENCHAT_THREADS=N fixes the count (no adaptation); so does OMP_NUM_THREADS when the
user set it (torch and libgomp already obey it).

Waiting (measured, not changed): libgomp's threads spin up to ~300,000 times (milliseconds) at
each barrier before they sleep, and it reads how once, when torch loads it. Under heavy load
(load average 10-20 on this 2-core machine) that spinning takes the CPU time the late thread
needs: two threads decoded 0.3-1.2 tok/s against one's 2.2-6.3, while with GOMP_SPINCOUNT=1000
two made 3.8-5.7 against 2.7-3.3, and with OMP_WAIT_POLICY=PASSIVE 4.8-10.6 against 2.1-4.9. But
at a load average of 2-3 short spins cost two threads ~15-20% (18.2-22.0 tok/s against 25.4-28.2
with the default), so the engine leaves libgomp's default and adapts the count instead; a user on
a machine that is always loaded can set either variable.

On a GPU the steps run on the GPU and the CPU only launches its kernels: `gpu_host()` fixes the
count at GPU_HOST_THREADS there (torch's default, one thread per core, wakes the whole pool for
the step's small host-side ops: a bare loop of decode steps took 60.8 ms a step at 16 threads
against 20.9 ms at one, NVIDIA H200 machine with 16 Xeon cores; the chat path's decode showed no
gain there, 19.1 against 18.2 tok/s, its time going elsewhere: BENCHMARKS.md, tenth session).

Counts go to `torch.set_num_threads`, which also sets libgomp's count for the calling thread, so
our C regions follow it; it must be applied from the thread that decodes (`begin`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from qwenchat.engine.errors import SettingsError

ENV_THREADS = "QWENCHAT_THREADS"


@dataclass(frozen=True)
class ProbeSchedule:
    window: int = 4  # timed steps per measurement (their median is the measure)
    settle: int = 1  # steps after a change of count that are not timed (the pool wakes, caches refill)
    first_hold: int = 32  # steps at a new winner before the next probe
    max_hold: int = 1024  # the hold doubles each time the current count wins again, up to this
    margin: float = 0.08  # a challenger must be this much faster to take over (no flip-flopping on noise)
    # a challenger's step this many times the current median ends its probe at once: on an idle
    # 2-core machine one thread's step is ~1.9x two threads', so a look at it costs one step
    give_up: float = 1.5
    trip: float = 1.6  # the current count's median this many times its reference: probe now

    def __post_init__(self) -> None:
        if self.window < 1 or self.settle < 0 or not 1 <= self.first_hold <= self.max_hold:
            raise ValueError(f"inconsistent probe schedule {self}")


def ladder(max_threads: int) -> tuple[int, ...]:
    """The counts worth trying, ascending: max, max-1 (one core taken by someone else), then
    halvings down to 1. A probe tries the neighbours of the current count on this ladder."""
    counts = {max_threads, max(1, max_threads - 1)}
    n = max_threads
    while n > 1:
        n //= 2
        counts.add(max(n, 1))
    return tuple(sorted(counts))


class ThreadChooser:
    """Per decode step: `count()` before it (the count to run it with, already applied),
    `record(seconds)` after it. Not thread-safe: one decoding thread at a time."""

    def __init__(self, counts: Sequence[int], schedule: ProbeSchedule = ProbeSchedule(),
                 apply: Callable[[int], None] | None = None, start: int | None = None) -> None:  # fmt: skip
        self.counts = tuple(sorted(set(counts)))
        self.schedule = schedule
        self._apply = apply or _torch_apply
        self.current = start if start is not None else self.counts[-1]
        self._applied: int | None = None
        self._recent: list[float] = []  # timed steps of the current count since its last decision
        self._reference: float | None = None  # its median when last chosen
        self._hold = schedule.first_hold
        self._until_probe = 0  # steps left before the next probe (0: measure, then probe)
        self._probe: list[int] = []  # challengers still to try in this probe
        self._trial: int | None = None  # the challenger being timed now
        self._trial_steps: list[float] = []
        self._results: dict[int, float] = {}
        self._settling = schedule.settle
        self.switches = 0  # how many times the winner changed (for tests and benchmarks)

    @property
    def adaptive(self) -> bool:
        return len(self.counts) > 1

    def begin(self) -> None:
        """Apply the chosen count on the calling thread (each reply: another thread may decode
        now), for the prompt: a probe's challenger is for decode steps (count() applies it), and a
        prompt run at one thread of two because a reply ended mid-probe took twice as long.
        Measurements carry on across replies, so short replies adapt too; the first step after
        a prompt is not timed (its caches are cold)."""
        self._applied = None
        self._settling = max(self._settling, self.schedule.settle)
        self._set(self.current)

    @property
    def running(self) -> int:
        return self._trial if self._trial is not None else self.current

    def count(self) -> int:
        """The thread count for the next step (applied)."""
        self._set(self.running)
        return self.running

    def record(self, seconds: float) -> None:
        """The wall time of the step just run at `count()`."""
        if not self.adaptive:
            return
        if self._settling > 0:
            self._settling -= 1
            if self._trial is not None and self._too_slow(seconds):
                self._end_trial(abandoned=True)
            return
        if self._trial is not None:
            self._record_trial(seconds)
        else:
            self._record_current(seconds)

    # -- the current count ----------------------------------------------------------------

    def _record_current(self, seconds: float) -> None:
        s = self.schedule
        self._recent.append(seconds)
        del self._recent[: -s.window]
        self._until_probe -= 1
        if len(self._recent) < s.window:
            return
        median = _median(self._recent)
        # a sudden slowdown (another process took a core) is checked at once, against fewer threads
        # only: at the fewest, or by trying more, it would only cost probes under a noisy load
        tripped = self._reference is not None and median > s.trip * self._reference and self.current > self.counts[0]
        if self._until_probe <= 0 or tripped:
            self._results = {self.current: median}
            self._probe = self._neighbours(below_only=self._until_probe > 0)
            self._next_trial()

    def _neighbours(self, below_only: bool) -> list[int]:
        i = self.counts.index(self.current)
        return [self.counts[j] for j in ((i - 1,) if below_only else (i - 1, i + 1)) if 0 <= j < len(self.counts)]

    # -- a probe --------------------------------------------------------------------------

    def _record_trial(self, seconds: float) -> None:
        if self._too_slow(seconds):
            self._end_trial(abandoned=True)
            return
        self._trial_steps.append(seconds)
        if len(self._trial_steps) >= self.schedule.window:
            self._end_trial(abandoned=False)

    def _too_slow(self, seconds: float) -> bool:
        return seconds > self.schedule.give_up * self._results[self.current]

    def _end_trial(self, abandoned: bool) -> None:
        assert self._trial is not None
        if not abandoned:
            self._results[self._trial] = _median(self._trial_steps)
        self._trial, self._trial_steps = None, []
        self._next_trial()

    def _next_trial(self) -> None:
        if self._probe:
            self._trial = self._probe.pop(0)
            self._settling = self.schedule.settle
            return
        self._decide()

    def _decide(self) -> None:
        s = self.schedule
        incumbent = self._results[self.current]
        best = min(self._results, key=self._results.__getitem__)
        if best != self.current and self._results[best] < (1 - s.margin) * incumbent:
            self.current, self._hold = best, s.first_hold
            self.switches += 1
            self._recent.clear()
        else:
            self._hold = min(2 * self._hold, s.max_hold)
            self._recent = self._recent[-s.window :]
        self._reference = self._results[self.current]
        self._settling = s.settle if self._applied != self.current else 0
        self._until_probe = self._hold

    def _set(self, n: int) -> None:
        if n != self._applied:
            self._apply(n)
            self._applied = n


def _median(values: list[float]) -> float:
    ordered, mid = sorted(values), len(values) // 2  # statistics.median, without importing it here
    return ordered[mid] if len(values) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


_torch_default: int | None = None


def torch_default_count() -> int:
    """torch's own count before any chooser changed it (the number of physical cores): a GPU
    reply's one thread must not become the ladder of a CPU engine that decodes later."""
    global _torch_default
    if _torch_default is None:
        import torch  # here, not at import: the chooser's logic is tested without it

        _torch_default = torch.get_num_threads()
    return _torch_default


def _torch_apply(n: int) -> None:
    import torch

    torch_default_count()  # noted before the first change
    torch.set_num_threads(n)


def pinned_count(environ: Mapping[str, str]) -> int | None:
    """The count the user fixed (QWENCHAT_THREADS, else OMP_NUM_THREADS), or None to adapt."""
    for name in (ENV_THREADS, "OMP_NUM_THREADS"):
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        first = raw.split(",")[0]  # OMP_NUM_THREADS may list counts per nesting level
        if not first.isdigit() or int(first) < 1:
            raise SettingsError(f"{name}={raw!r} is not a thread count",
                                f"set {name} to a whole number of threads (1 or more), or unset it to adapt")  # fmt: skip
        return int(first)
    return None


def chooser_for(max_threads: int, environ: Mapping[str, str] | None = None,
                apply: Callable[[int], None] | None = None) -> ThreadChooser:  # fmt: skip
    """A chooser over `ladder(max_threads)`, or one fixed count when the user pinned it."""
    pinned = pinned_count(os.environ if environ is None else environ)
    if pinned is not None:
        return ThreadChooser((pinned,), apply=apply)
    return ThreadChooser(ladder(max_threads), apply=apply)


GPU_HOST_THREADS = 1  # see the module docstring: a GPU step's host side is serial work
_shared: ThreadChooser | None = None
_gpu_host: ThreadChooser | None = None


def gpu_host(environ: Mapping[str, str] | None = None) -> ThreadChooser:
    """The fixed count for steps that run on a GPU: GPU_HOST_THREADS, or the user's pinned count."""
    global _gpu_host
    if environ is not None:
        return chooser_for(GPU_HOST_THREADS, environ)  # ladder(1) is (1,): nothing to adapt
    if _gpu_host is None:
        _gpu_host = gpu_host(os.environ)
    return _gpu_host


def shared() -> ThreadChooser:
    """The process's chooser (the cores are the process's, whichever engine decodes): made on
    first use from the environment and torch's default count (the number of physical cores)."""
    global _shared
    if _shared is None:
        _shared = chooser_for(torch_default_count())
    return _shared


def use(chooser: ThreadChooser | None) -> ThreadChooser | None:
    """Make `chooser` the process's (None: made afresh from the environment on next use);
    returns the one it replaces. For benchmarks comparing fixed counts with adaptation."""
    global _shared
    previous, _shared = _shared, chooser
    return previous
