"""The fleet agent's own database (`<state_dir>/fleet.sqlite3`, docs/mqtt.md).

- the event outbox: every fleet event gets its `seq` here (per box, increasing, kept
  across restarts and upgrades) and waits in this table until the broker acknowledged it
  (PUBACK), so events survive both a broker outage and a restart of the box; beyond
  `cap` waiting events the oldest are dropped and counted (`dropped_before` on the next
  one published);
- the connect counter: the second half of the `session` (`<boot id>-<counter>`), so that
  two connections of one boot, even of two processes, never share a session.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.ledger.migrate import Migration, connect, migrate

FILE = "fleet.sqlite3"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def _m0001_outbox(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("""
        CREATE TABLE outbox (
            seq     INTEGER PRIMARY KEY,   -- the event's fleet seq
            doc     TEXT NOT NULL,         -- the event as JSON, without session/delayed
            delayed INTEGER NOT NULL DEFAULT 0
        )""")


MIGRATIONS = [Migration("0001_outbox", _m0001_outbox)]


def boot_id(path: str = BOOT_ID_FILE) -> str:
    """This boot's id (a UUID from the kernel); "noboot" where there is none."""
    try:
        return Path(path).read_text().strip() or "noboot"
    except OSError:
        return "noboot"


@dataclass
class Pending:
    seq: int
    doc: dict[str, Any]
    delayed: bool


class FleetStore:
    def __init__(self, path: str | Path, cap: int = 10_000) -> None:
        self.path = str(path)
        self.cap = cap
        self.db = connect(self.path)
        migrate(self.db, MIGRATIONS)
        # whatever waits from an earlier run waited for a broker: delayed
        self.db.execute("UPDATE outbox SET delayed = 1")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ counters

    def _get(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set(self, key: str, value: int) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", (key, value))

    def next_connection(self) -> int:
        """Count one more connection; its number (1, 2, ... across restarts)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            n = self._get("connections") + 1
            self._set("connections", n)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return n

    @property
    def last_seq(self) -> int:
        return self._get("seq")

    @property
    def dropped_unreported(self) -> int:
        return self._get("dropped_unreported")

    @property
    def dropped_total(self) -> int:
        return self._get("dropped_total")

    def reported_dropped(self, n: int) -> None:
        """`n` drops were announced in a published event's `dropped_before`."""
        self._set("dropped_unreported", max(0, self.dropped_unreported - n))

    # ------------------------------------------------------------------ outbox

    def add(self, doc: dict[str, Any], delayed: bool) -> tuple[int, int]:
        """Give `doc` the next seq and keep it until sent; (seq, how many were dropped)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._get("seq") + 1
            self._set("seq", seq)
            doc = {**doc, "seq": seq}
            self.db.execute("INSERT INTO outbox (seq, doc, delayed) VALUES (?, ?, ?)",
                            (seq, json.dumps(doc, separators=(",", ":")), int(delayed)))
            (count,) = self.db.execute("SELECT count(*) FROM outbox").fetchone()
            dropped = max(0, int(count) - self.cap)
            if dropped:
                self.db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                                "ORDER BY seq LIMIT ?)", (dropped,))
                self._set("dropped_unreported", self._get("dropped_unreported") + dropped)
                self._set("dropped_total", self._get("dropped_total") + dropped)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return seq, dropped

    def waiting(self, limit: int = 100) -> list[Pending]:
        rows = self.db.execute("SELECT seq, doc, delayed FROM outbox ORDER BY seq LIMIT ?",
                               (limit,)).fetchall()
        return [Pending(int(s), json.loads(d), bool(x)) for s, d, x in rows]

    def count(self) -> int:
        (n,) = self.db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(n)

    def sent(self, seq: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def mark_delayed(self) -> None:
        self.db.execute("UPDATE outbox SET delayed = 1 WHERE delayed = 0")

    # ------------------------------------------------------------------ outages sent

    @property
    def outage_sent(self) -> int:
        """The id of the last outage-ledger row queued as an `outage` event."""
        return self._get("outage_sent")

    def set_outage_sent(self, ident: int) -> None:
        self._set("outage_sent", ident)
