"""A synthetic drill for the report's tests: phases played back to back from `t0`, the
box's events at seconds into the drill, and the check that a report failed as it must."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from lab.drill.observed import PlayedPhase
from lab.drill.report import Report, render


def played(lengths: Sequence[tuple[str, float]], t0: datetime) -> list[PlayedPhase]:
    """The phases `(name, seconds)` one after the other, monotonic time 0 at `t0`."""
    phases, at = [], 0.0
    for name, seconds in lengths:
        phases.append(PlayedPhase(name, at, at + seconds, t0 + timedelta(seconds=at),
                                  t0 + timedelta(seconds=at + seconds)))
        at += seconds
    return phases


def box_event(t0: datetime, kind: str, second: float, seq: int,
              **fields: Any) -> dict[str, Any]:
    """One of the box's events (`recent_events`), stamped `second` s after `t0`."""
    return {"seq": seq, "kind": kind, "message": kind,
            "at": (t0 + timedelta(seconds=second)).isoformat(), **fields}


def assert_fails_with(report: Report, failure: str) -> None:
    """The drill failed with `failure` among its reasons, and the text says the first."""
    assert not report.passed
    assert any(failure in f for f in report.failures), report.failures
    assert f"FAILED: {report.failures[0]}" in render(report)
