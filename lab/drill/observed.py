"""What the drill observed, and how its verdicts look things up in it (pure).

The phases as played (monotonic and wall times), the box's active uplink as the drill's
poller saw it, and the box's events, which carry the box's wall-clock time (`at`,
docs/schemas/status.json). Shared by the report (`report`) and its brownout section
(`brownout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PlayedPhase:
    name: str
    started: float  # monotonic
    ended: float
    started_at: datetime  # wall clock, to compare with the box's event times
    ended_at: datetime


@dataclass(frozen=True)
class Sample:
    """The box's active uplink as the drill saw it at monotonic time `at`."""

    at: float
    active: str


def event_time(event: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event["at"]))
    except (KeyError, ValueError):
        return None


def first_event(events: Sequence[Mapping[str, Any]], kind: str, after: datetime,
                before: datetime | None = None) -> Mapping[str, Any] | None:
    """The box's earliest `kind` event at or after `after` (and before `before`)."""
    found = [(t, e) for e in events if e.get("kind") == kind
             and (t := event_time(e)) is not None and t >= after
             and (before is None or t < before)]
    return min(found, key=lambda pair: pair[0])[1] if found else None


def count_events(events: Sequence[Mapping[str, Any]], kind: str, after: datetime,
                 before: datetime) -> int:
    """How many `kind` events the box stamped in [after, before)."""
    return sum(1 for e in events if e.get("kind") == kind
               and (t := event_time(e)) is not None and after <= t < before)


def seconds_after(event: Mapping[str, Any] | None, earlier: datetime) -> float | None:
    """Seconds from `earlier` to `event` (None: no event)."""
    later = None if event is None else event_time(event)
    return None if later is None else round((later - earlier).total_seconds(), 3)


def phase_named(phases: Sequence[PlayedPhase], name: str) -> PlayedPhase | None:
    return next((p for p in phases if p.name == name), None)
