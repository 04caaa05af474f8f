"""Fixtures for the store tests: an open Store in the isolated QWENCHAT_HOME."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qwenchat.store import Store


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open() as s:
        yield s
