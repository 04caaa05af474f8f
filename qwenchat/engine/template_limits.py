"""Time and size limits for one chat-template render, checked from inside the sandbox.

A template is untrusted code: jinja's sandbox stops it reaching Python internals, but not from
looping for hours (`range(100000)` inside `range(100000)`) or building a gigabyte string by
doubling, padding (`center`, `indent`, a `%1000000000s` format) or big-integer arithmetic.
`Budget` is what one render may spend: a monotonic deadline, checked on every loop iteration,
call, operator and output piece the sandbox sees, and a size cap on every string the
template builds (and on the output), checked *before* an operation whose result can be much
larger than its inputs, and after the others (whose results are at most a few inputs long).
Crossing a limit raises `LimitExceeded`; the template module turns it into a TemplateError.

The module knows nothing about jinja's environment; `template_sandbox` wires it in.
"""

from __future__ import annotations

import re
import string
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2.utils import Namespace

RENDER_SECONDS = 2.0  # a real chat template renders in milliseconds; quit waits at most this
BASE_CHARS = 10_000_000  # strings a template may build, on top of twice what it was given
MAX_ITEMS = 1_000_000  # elements of one list a template may build
MAX_INT_BITS = 1 << 15  # ~9,900 digits; more than Python will print anyway
PRINT_FACTOR = 4  # all text printed, counting text that macros print and callers print again
_CHECK_EVERY = 16  # ticks between clock reads


class LimitExceeded(Exception):
    """A render crossed its time or size limit; the message says which and the limit."""


@dataclass
class Budget:
    """What one render may still spend. `tick()` on every step the sandbox sees."""

    seconds: float = RENDER_SECONDS
    max_chars: int = BASE_CHARS
    deadline: float = field(default=float("inf"))
    ticks: int = 0
    printed: int = 0  # characters of every `{{ }}`, buffered blocks and macro bodies included

    @classmethod
    def start(cls, seconds: float, input_chars: int) -> Budget:
        return cls(seconds, BASE_CHARS + 2 * input_chars, time.monotonic() + seconds)

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % _CHECK_EVERY == 0 and time.monotonic() > self.deadline:
            raise LimitExceeded(f"it took longer than {self.seconds:g} s (the time limit of one render)")

    def chars(self, n: int, what: str) -> None:
        if n > self.max_chars:
            raise LimitExceeded(f"{what} would be {n:,} characters long (limit {self.max_chars:,})")

    def count_printed(self, n: int) -> None:
        # Buffered output (a `{% set %}` block, a macro body) grows in a list that is only
        # joined at its end: count it as it is printed, so a loop cannot fill memory first.
        self.printed += n
        if self.printed > PRINT_FACTOR * self.max_chars:
            raise LimitExceeded(f"it printed {self.printed:,} characters (limit {PRINT_FACTOR * self.max_chars:,})")

    def items(self, n: int, what: str) -> None:
        if n > MAX_ITEMS:
            raise LimitExceeded(f"{what} would hold {n:,} items (limit {MAX_ITEMS:,})")

    def int_bits(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise LimitExceeded(f"an integer would have about {bits:,} bits (limit {MAX_INT_BITS:,})")

    def result(self, value: Any, what: str = "a value") -> Any:
        """Check a value the template just made; iterators come back guarded."""
        if isinstance(value, str):
            self.chars(len(value), what)
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            self.items(len(value), what)
        elif isinstance(value, int) and not isinstance(value, bool):
            self.int_bits(value.bit_length())
        elif isinstance(value, Iterator):
            return Guarded(value, self)
        return value

    def text_of(self, value: Any, what: str) -> None:
        """Refuse before `str(value)` when that text would be over the limit (containers)."""
        if isinstance(value, (list, tuple, dict, set, frozenset, Namespace)):
            self.chars(text_size(value, self.max_chars, self), what)


class _Unlimited(Budget):
    """Outside a render (jinja folds constants while compiling): sizes only, no clock."""

    def tick(self) -> None:
        pass

    def count_printed(self, n: int) -> None:
        pass  # shared by every compile: a running total would grow without end


_local = threading.local()
_UNLIMITED = _Unlimited()


def current() -> Budget:
    return getattr(_local, "budget", None) or _UNLIMITED


class active:
    """`with active(budget):` makes `budget` the one the sandbox charges in this thread."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __enter__(self) -> Budget:
        self._previous = getattr(_local, "budget", None)
        _local.budget = self.budget
        return self.budget

    def __exit__(self, *exc: Any) -> None:
        _local.budget = self._previous


class Guarded:
    """An iterable that ticks the budget per item (loops, lazy filter results). `len()` works
    when the wrapped object has one, so `loop.length` behaves as before."""

    __slots__ = ("_inner", "_budget")

    def __init__(self, inner: Iterable[Any], budget: Budget) -> None:
        self._inner, self._budget = inner, budget

    def __iter__(self) -> Iterator[Any]:
        budget = self._budget
        for item in self._inner:
            budget.tick()
            yield item

    def __len__(self) -> int:
        return len(self._inner)  # type: ignore[arg-type] - TypeError when it has none, as before


# -- size estimates ------------------------------------------------------------------------------


def text_size(value: Any, cap: int, budget: Budget | None = None) -> int:
    """About len(str(value)) for nested containers (within a small factor), counted without
    building it and given up as soon as it passes `cap`; shared references count every time,
    as in the text."""
    total, stack = 0, [value]
    tick = budget.tick if budget is not None else None
    while stack and total <= cap:
        v = stack.pop()
        if tick is not None:
            tick()
        kind = type(v)
        if kind is str:
            total += len(v) + 2
        elif kind is dict or isinstance(v, Mapping):
            total += 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(v)
            stack.extend(v)
        elif isinstance(v, str):
            total += len(v) + 2
        elif isinstance(v, Namespace):
            total += 16
            stack.append(v._Namespace__attrs)  # type: ignore[attr-defined] - its private dict
        else:
            total += 8 if not isinstance(v, int) else 2 + v.bit_length() // 3
    return total


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def check_format(fmt: str, args: Iterable[Any], budget: Budget, percent: bool) -> None:
    """Refuse a `%`-format or str.format whose widths or precisions alone pass the limit, or
    whose dynamic widths (`*`, `{:{}}`) come from a number over it."""
    dynamic = False
    if percent:
        for width, precision in _PERCENT_SPEC.findall(fmt):
            for n in (width, precision):
                dynamic |= n == "*"
                if n.isdigit():
                    budget.chars(int(n), "a formatted field")
    else:
        for _, _, spec, _ in string.Formatter().parse(fmt):
            dynamic |= bool(spec) and "{" in spec
            for n in _NUMBER.findall(spec or ""):
                budget.chars(int(n), "a formatted field")
    args = list(args)
    for arg in args:
        if dynamic and isinstance(arg, int):
            budget.chars(abs(arg), "a formatted field")
        budget.text_of(arg, "a formatted value")


def pieces_bound(s: str, sep: str | None) -> int:
    """At most how many pieces `s.split(sep)` makes."""
    if sep is None:
        return 1 + sum(s.count(c) for c in " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2028\u2029\u3000")
    return 1 + (s.count(sep) if sep else 0)


def replaced_size(s: str, old: str, new: str, count: int | None = None) -> int:
    n = len(s) + 1 if old == "" else s.count(old)
    if count is not None and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def checked_join(sep: str, items: Iterable[Any], budget: Budget, convert: bool) -> str:
    """`sep.join(items)` (with `str()` of each item when `convert`, as jinja's join filter),
    refused as soon as the running length passes the limit."""
    parts: list[str] = []
    total = 0
    for item in items:
        budget.tick()
        if convert and not isinstance(item, str):
            budget.text_of(item, "a joined item")
            item = str(item)
        parts.append(item)
        total += (len(item) if isinstance(item, str) else 0) + len(sep)
        budget.chars(total, "a joined string")
    return sep.join(parts)
