"""Following the wall clock when it is set.

Stored due times (`next_attempt_at`) and lost-attempt windows (`lost_attempt_until`) are
wall times, because they must survive a restart. They measure elapsed time, though: when
NTP (after a boot without RTC), the modem's NITZ or an operator sets the clock by hours,
each must move with it, or a clock corrected back by 6 h holds the queue for 6 h and one
set forward ends a lost attempt's wait early.

The frame is the offset between the wall clock and the monotonic clock (which counts
from boot and is never set). It is checked inside every write transaction, before
anything is written, and kept in the database with the boot id; so a step is seen by the
next write whoever makes it (the POS service, the forwarder, a restarted daemon in the
same boot), and rows written after the step are never moved by it. Across a reboot the
monotonic clock starts again and nothing can be compared: the forwarder's own guards
(a due time beyond `store.MAX_DELAY` is due now; a lost-attempt window beyond one
attempt's lifetime is ignored) cover that.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: A change of the wall/monotonic offset this large is a step of the clock; smaller
#: ones are NTP slewing and scheduling noise.
WALL_STEP_S = 5.0
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id() -> str:
    """The kernel's id of this boot ("" when unreadable: no frame is kept then)."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


class WallFrame:
    def __init__(self, *, wall: Callable[[], float], monotonic: Callable[[], float],
                 boot_id: str, step_s: float = WALL_STEP_S) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._boot_id = boot_id
        self._step_ms = int(step_s * 1000)
        self._offset_ms: int | None = None  # as last recorded

    def _offset_now(self) -> int:
        return int((self._wall() - self._monotonic()) * 1000)

    def pending(self) -> bool:
        """Whether `follow` has something to do (cheap: no I/O)."""
        return self._offset_ms is None or \
            abs(self._offset_now() - self._offset_ms) >= self._step_ms

    def follow(self, conn: sqlite3.Connection) -> int:
        """Inside a write transaction: the step (ms) the clock was set by since the frame
        was recorded (0: none), recording the new frame."""
        offset = self._offset_now()
        last = self._offset_ms if self._offset_ms is not None else self._load(conn)
        if last is not None and abs(offset - last) < self._step_ms:
            self._offset_ms = last
            return 0
        self._save(conn, offset)
        self._offset_ms = offset
        return 0 if last is None else offset - last

    def _load(self, conn: sqlite3.Connection) -> int | None:
        row = conn.execute("SELECT boot_id, offset_ms FROM wall_frame WHERE id = 1").fetchone()
        if row is None or not self._boot_id or row[0] != self._boot_id:
            return None
        return int(row[1])

    def _save(self, conn: sqlite3.Connection, offset: int) -> None:
        conn.execute("INSERT INTO wall_frame (id, boot_id, offset_ms) VALUES (1, ?, ?) "
                     "ON CONFLICT (id) DO UPDATE SET boot_id = excluded.boot_id, "
                     "offset_ms = excluded.offset_ms", (self._boot_id, offset))


def shift_schedule(conn: sqlite3.Connection, step_ms: int) -> None:
    """The wall clock was set by `step_ms`: move every owed payment's due time and
    lost-attempt window by it (they measure elapsed time, not dates). Creation times
    stay: they are what the clock said, bound to each card by its MAC."""
    moved = conn.execute(
        "UPDATE payments SET next_attempt_at = next_attempt_at + ?, "
        "lost_attempt_until = lost_attempt_until + ? "
        "WHERE forward_state IN ('queued', 'unknown')", (step_ms, step_ms)).rowcount
    log.warning("the wall clock was set by %+.0f s: %d due times moved with it",
                step_ms / 1000, moved)
