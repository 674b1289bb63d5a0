"""The box's event stream: what happened, in order, for logs, fleet and the status API.

Events are small JSON-able records. Subscribers get their own bounded queue; a
subscriber that falls behind loses the oldest events (and is told how many),
never blocks the publisher.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Severity = Literal["info", "warning", "error"]

#: Event kinds named by docs/mqtt.md, plus the box's own.
KINDS = frozenset({
    "failover", "failback", "modem_reset", "offline_mode", "queue_drained",
    "declined_after_offline", "fault", "component_restarted", "config_reloaded",
    "carrier_overlap", "started", "stopping", "keys_rotated",
    "modem_recovered", "clock_set", "steer", "unsteer",
})


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    severity: Severity
    message: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "severity": self.severity,
                "message": self.message, "at": self.at.isoformat(), **self.data}


class EventBus:
    """Publish events to every subscriber; keep the most recent ones for the status API."""

    def __init__(self, keep: int = 100, wall: Callable[[], datetime] | None = None) -> None:
        self._recent: collections.deque[Event] = collections.deque(maxlen=keep)
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._seq = 0
        self._wall = wall or (lambda: datetime.now(UTC))
        self.dropped = 0

    def emit(self, kind: str, message: str, severity: Severity = "info",
             **data: Any) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        self._seq += 1
        event = Event(self._seq, kind, severity, message, self._wall(), data)
        self._recent.append(event)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)
        return event

    def recent(self) -> list[Event]:
        return list(self._recent)

    async def subscribe(self, maxsize: int = 256) -> AsyncIterator[Event]:
        """Yield every event emitted from now on, until the caller stops iterating."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)
