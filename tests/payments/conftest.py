"""Fixtures the payments tests share."""

from __future__ import annotations

import pytest

from tests.support.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """The wall and monotonic clock the store and forwarder are given (`tests/support/clock.py`)."""
    return ManualClock()
