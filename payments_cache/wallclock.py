"""The wall clock's trustworthiness: a box without a real-time clock boots in 1970.

A Raspberry Pi has no RTC: until NTP or the modem sets the time, `time.time()` is near
the epoch (or wherever fake-hwclock left it). Wall time is used only where the date
itself matters (card expiry, `captured_at`, the age of the queue); timers and holds
use the monotonic clock. Before `WALL_FLOOR` the wall clock is taken as unset: no
offline approval (the expiry rule cannot be applied), and rows stamped before it never
count as the oldest of the queue.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: No real date is earlier than this (before storebox existed).
WALL_FLOOR = datetime(2023, 1, 1, tzinfo=UTC)


def wall_unset(now: datetime) -> bool:
    return now < WALL_FLOOR
