"""The generation queue: one worker thread runs one request at a time on the engine (which
serves one request at a time from one thread); the rest wait in arrival order, at most
`max_waiting` of them, and one more is refused (`QueueFull`: a 503 with Retry-After).

A job's events (Chunk records, then a Reply) travel from the worker to the request's event loop
through an asyncio queue, the text in batches (`TextBatcher`: at most one hand-off per
`stream_interval_s`, so the loop does not take the cores from the engine at every token).
`Job.cancel()` (the client went away, the server is stopping) sets the threading.Event the engine
checks before every token, so generation stops within a token; a job cancelled while still
waiting is skipped without touching the engine.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from qwenchat.engine.records import Chunk
from qwenchat.server.text_batches import DEFAULT_STREAM_INTERVAL_S, TextBatcher

Start = Callable[[threading.Event], Iterator[Any]]  # builds the event stream (errors surface here)
_DONE = object()
_STOP = object()


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


class Job:
    def __init__(self, start: Start, loop: asyncio.AbstractEventLoop) -> None:
        self.start, self.loop = start, loop
        self.cancelled = threading.Event()
        self._events: asyncio.Queue[Any] = asyncio.Queue()

    def cancel(self) -> None:
        self.cancelled.set()

    async def next(self) -> Any:
        """The next event; StopAsyncIteration at the end; an exception the engine raised."""
        item = await self._events.get()
        if item is _DONE:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def _put(self, item: Any) -> None:  # from the worker thread
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel()


class GenerationQueue:
    def __init__(self, max_waiting: int, stream_interval_s: float = DEFAULT_STREAM_INTERVAL_S) -> None:
        self.max_waiting = max_waiting
        self.stream_interval_s = stream_interval_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.RLock()  # close() may run in a signal handler on the loop thread, mid-submit
        self._waiting = 0
        self._running: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="qwenchat-generation", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        return self._running is not None

    def submit(self, start: Start) -> Job:
        """Queue a job (from the event loop); QueueFull when `max_waiting` already wait."""
        job = Job(start, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise ShuttingDown()
            if self._waiting + (self._running is not None) > self.max_waiting:  # one runs, max_waiting wait
                raise QueueFull()
            self._waiting += 1
            self._queue.put(job)
        return job

    def close(self) -> None:
        """Refuse new jobs, cancel the running one and every waiting one (the server is stopping)."""
        with self._lock:
            self._closed = True
            running = self._running
        if running is not None:
            running.cancel()
        self._queue.put(_STOP)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                self._drain()
                return
            with self._lock:
                self._waiting -= 1
                if self._closed:
                    job.cancel()
                self._running = job
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set():
            job._put(ShuttingDown() if self._closed else _DONE)
            return
        batcher = TextBatcher(self.stream_interval_s)
        try:
            events = job.start(job.cancelled)
            try:
                for event in events:
                    _hand_off(job, batcher, event)
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()  # a generator's cleanup (a saved reply's final write) runs here, in this thread
        except Exception as e:  # noqa: BLE001 - handed to the request, which turns it into a response
            _hand_off(job, batcher, e)
            return
        _hand_off(job, batcher, _DONE)

    def _drain(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job.cancel()
                job._put(ShuttingDown())


def _hand_off(job: Job, batcher: TextBatcher, event: Any) -> None:
    """Text through the batcher; any other event after the text held back."""
    if isinstance(event, Chunk):
        event = batcher.push(event)
    elif (held := batcher.flush()) is not None:
        job._put(held)
    if event is not None:
        job._put(event)
