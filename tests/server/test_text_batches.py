"""TextBatcher: the first text at once, later text joined within the interval, nothing lost."""

from __future__ import annotations

from qwenchat.engine.records import Chunk
from qwenchat.server.text_batches import TextBatcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_text_goes_at_once_and_text_within_the_interval_is_joined():
    clock = Clock()
    b = TextBatcher(0.1, clock)
    assert b.push(Chunk("Hel")) == Chunk("Hel")
    clock.now += 0.03
    assert b.push(Chunk("lo")) is None
    clock.now += 0.03
    assert b.push(Chunk(",")) is None
    clock.now += 0.05  # 0.11 s since the last text sent
    assert b.push(Chunk(" world")) == Chunk("lo, world")
    assert b.flush() is None


def test_held_text_comes_out_on_flush_once():
    clock = Clock()
    b = TextBatcher(0.1, clock)
    b.push(Chunk("a"))
    clock.now += 0.01
    assert b.push(Chunk("b")) is None
    assert b.flush() == Chunk("b")
    assert b.flush() is None


def test_slow_tokens_each_go_at_once():
    clock = Clock()
    b = TextBatcher(0.1, clock)
    for piece in ("one", " two", " three"):
        assert b.push(Chunk(piece)) == Chunk(piece)
        clock.now += 0.5


def test_interval_zero_sends_every_piece():
    b = TextBatcher(0.0, Clock())  # the clock never moves: even so, nothing is held
    assert [b.push(Chunk(p)) for p in "abc"] == [Chunk("a"), Chunk("b"), Chunk("c")]
