"""The generation queue hands a job's events to the request's event loop: the text in batches
(at most one per stream interval), in order, all of it, and always before what follows it."""

from __future__ import annotations

import asyncio
import time

import pytest

from qwenchat.engine.records import Chunk
from qwenchat.server.jobs import GenerationQueue

PIECES = [f"t{i} " for i in range(40)]


def collect(queue: GenerationQueue, start) -> list:
    async def run() -> list:
        job = queue.submit(start)
        events = []
        while True:
            try:
                events.append(await job.next())
            except StopAsyncIteration:
                return events
            except Exception as e:  # noqa: BLE001 - the engine's error, as the request sees it
                events.append(e)
                return events

    return asyncio.run(run())


@pytest.fixture
def make_queue():
    made: list[GenerationQueue] = []

    def make(interval_s: float) -> GenerationQueue:
        made.append(GenerationQueue(4, stream_interval_s=interval_s))
        return made[-1]

    yield make
    for q in made:
        q.close()
        q.join(5)


def fast_reply(cancel, end=("the reply",)):
    for piece in PIECES:
        yield Chunk(piece)
    yield from end


def test_fast_text_is_batched_whole_and_in_order_before_the_reply(make_queue):
    events = collect(make_queue(10.0), fast_reply)
    chunks, last = events[:-1], events[-1]
    assert last == "the reply"
    assert all(isinstance(c, Chunk) for c in chunks)
    assert "".join(c.text for c in chunks) == "".join(PIECES)
    assert chunks[0] == Chunk(PIECES[0])  # the first text is not held back
    assert len(chunks) == 2  # the rest came within the interval: one batch, sent before the reply


def test_interval_zero_hands_over_every_piece(make_queue):
    events = collect(make_queue(0.0), fast_reply)
    assert events == [Chunk(p) for p in PIECES] + ["the reply"]


def test_held_text_goes_before_an_error(make_queue):
    def failing(cancel):
        yield from fast_reply(cancel, end=())
        raise RuntimeError("the engine broke")

    events = collect(make_queue(10.0), failing)
    assert "".join(e.text for e in events[:-1]) == "".join(PIECES)
    assert isinstance(events[-1], RuntimeError)


def test_paced_text_is_batched_by_time(make_queue):
    def paced(cancel):
        for piece in PIECES[:20]:
            time.sleep(0.01)
            yield Chunk(piece)
        yield "the reply"

    events = collect(make_queue(0.05), paced)
    chunks = events[:-1]
    assert "".join(c.text for c in chunks) == "".join(PIECES[:20])
    # 20 pieces over ~0.2 s (or longer on a busy machine): at most one batch per 0.05 s after the first
    assert 2 <= len(chunks) < 20
