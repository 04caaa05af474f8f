from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import pytest

from qwenchat.store import Store


async def wait_for(pilot, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app run until `cond()` holds (workers are real threads)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)
    await pilot.pause()


@pytest.fixture
def fast_follow(monkeypatch):
    """The app looks at other windows' changes every 50 ms instead of every FOLLOW_S."""
    from qwenchat.tui.screens import other_windows

    monkeypatch.setattr(other_windows, "FOLLOW_S", 0.05)


@pytest.fixture
def store():
    s = Store.open()
    yield s
    s.close()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests here on a fresh asyncio loop (no async plugin needed)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {n: pyfuncitem.funcargs[n] for n in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None
