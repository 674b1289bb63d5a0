"""The box's outage ledger (docs/cli.md): one row per uplink outage, kept in its own
SQLite file (`<state_dir>/outages.sqlite3`, recorded migrations) across restarts and
upgrades: evidence for an ISP compensation claim.

It follows the box state rather than the failover engine: a listener on `BoxState`
sees `uplink.wired.state` / `uplink.lte.state` (written by
`firmware.components.failover`) go `down` (an outage opens) and leave `down` for `up`,
`degraded` or `standby` (it ends; `unknown`, the state before the first judgement, does
neither). While an outage is open, every payment the box takes offline (a rise of
`payments.queued`) is counted against it. An ended outage goes into
`BoxState.outages.ended`, from where the fleet agent sends it as an `outage` event. The
daemon builds it with `firmware.components.ledger`.
"""

from __future__ import annotations

import csv
import io
import logging
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware.ledger.migrate import Migration, connect, migrate
from firmware.state import BoxState, LinkHealth

log = logging.getLogger("storebox.outages")

FILE = "outages.sqlite3"
#: The ended outages kept in the box state (and so in the status and for the fleet).
KEEP_IN_STATE = 20
UPLINKS = ("wired", "lte")
#: The columns of `storebox outages` (docs/cli.md), in order.
COLUMNS = ("uplink", "isp", "started_at", "ended_at", "duration_s", "detected_by",
           "cause_hint", "payments_offline", "payments_offline_amount")
#: Link states that end an outage (`unknown` says nothing yet).
WORKING = ("up", "degraded", "standby")


def _m0001_outages(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE outages (
            id                      INTEGER PRIMARY KEY,
            uplink                  TEXT NOT NULL CHECK (uplink IN ('wired', 'lte')),
            isp                     TEXT NOT NULL DEFAULT '',
            started_at              TEXT NOT NULL,   -- ISO 8601, UTC
            ended_at                TEXT,            -- NULL while open
            duration_s              REAL,
            detected_by             TEXT NOT NULL CHECK (detected_by IN ('carrier', 'probes')),
            cause_hint              TEXT,
            payments_offline        INTEGER NOT NULL DEFAULT 0,
            payments_offline_amount INTEGER NOT NULL DEFAULT 0
        )""")
    conn.execute("CREATE INDEX outages_started ON outages (started_at)")
    conn.execute("CREATE UNIQUE INDEX outages_one_open ON outages (uplink) "
                 "WHERE ended_at IS NULL")


MIGRATIONS = [Migration("0001_outages", _m0001_outages)]


def _row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, values, strict=True)}


class OutageLedger:
    """The outage table."""

    def __init__(self, path: str | Path) -> None:
        self.db = connect(str(path))
        migrate(self.db, MIGRATIONS)
        self.db.row_factory = _row

    def close(self) -> None:
        self.db.close()

    def open_outage(self, uplink: str, isp: str, started_at: datetime, detected_by: str,
                    cause_hint: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO outages (uplink, isp, started_at, detected_by, cause_hint) "
            "VALUES (?, ?, ?, ?, ?)",
            (uplink, isp, started_at.astimezone(UTC).isoformat(), detected_by, cause_hint))
        return int(cur.lastrowid or 0)

    def count_payment(self, ident: int, amount: int) -> None:
        self.db.execute("UPDATE outages SET payments_offline = payments_offline + 1, "
                        "payments_offline_amount = payments_offline_amount + ? "
                        "WHERE id = ?", (amount, ident))

    def close_outage(self, ident: int, ended_at: datetime) -> dict[str, Any]:
        row = self.get(ident)
        started = datetime.fromisoformat(row["started_at"])
        duration = round(max(0.0, (ended_at - started).total_seconds()), 3)
        self.db.execute("UPDATE outages SET ended_at = ?, duration_s = ? WHERE id = ?",
                        (ended_at.astimezone(UTC).isoformat(), duration, ident))
        return self.get(ident)

    def get(self, ident: int) -> dict[str, Any]:
        row: dict[str, Any] = self.db.execute("SELECT * FROM outages WHERE id = ?",
                                              (ident,)).fetchone()
        return row

    def open_rows(self) -> list[dict[str, Any]]:
        return list(self.db.execute("SELECT * FROM outages WHERE ended_at IS NULL "
                                    "ORDER BY id"))

    def rows(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every outage (that ended or is still open) since `since`, oldest first; one
        still going on at `since` counts too."""
        if since is None:
            return list(self.db.execute("SELECT * FROM outages ORDER BY started_at, id"))
        iso = since.astimezone(UTC).isoformat()
        return list(self.db.execute(
            "SELECT * FROM outages WHERE started_at >= ? OR ended_at IS NULL OR ended_at >= ?"
            " ORDER BY started_at, id", (iso, iso)))

    def ended(self, limit: int) -> list[dict[str, Any]]:
        rows = list(self.db.execute("SELECT * FROM outages WHERE ended_at IS NOT NULL "
                                    "ORDER BY id DESC LIMIT ?", (limit,)))
        return rows[::-1]

    def total(self) -> int:
        row = self.db.execute("SELECT count(*) AS n FROM outages").fetchone()
        return int(row["n"])


class LedgerFollower:
    """Keeps the ledger in step with the box state (a `BoxState.on_change` listener)."""

    def __init__(self, state: BoxState, ledger: OutageLedger,
                 isp_of: Callable[[str], str]) -> None:
        self.state = state
        self.ledger = ledger
        self.isp_of = isp_of
        self.open: dict[str, int] = {r["uplink"]: int(r["id"]) for r in ledger.open_rows()}
        self._queued = state.payments.queued
        self._queued_amount = state.payments.queued_amount
        self._busy = False
        self.closed = False
        self._publish()

    def _publish(self) -> None:
        self.state.update(self.state.outages, open=sorted(self.open),
                          total=self.ledger.total(),
                          ended=self.ledger.ended(KEEP_IN_STATE))

    def __call__(self) -> None:
        if self._busy or self.closed:  # our own update of the state calls us again
            return
        self._busy = True
        try:
            self._follow()
        except sqlite3.Error:
            log.exception("outage ledger: cannot record")
        finally:
            self._busy = False

    def _follow(self) -> None:
        changed = self._payments()
        for name in UPLINKS:
            health: LinkHealth = getattr(self.state.uplink, name)
            if health.state == "down" and name not in self.open:
                self.open[name] = self.ledger.open_outage(
                    name, self.isp_of(name), health.since or self.state.wall(),
                    "carrier" if health.carrier is False else "probes", health.reason)
                log.warning("outage ledger: %s down (%s)", name, health.reason or "no reason")
                changed = True
            elif health.state in WORKING and name in self.open:
                row = self.ledger.close_outage(self.open.pop(name),
                                               health.since or self.state.wall())
                log.info("outage ledger: %s back after %.1f s; %d payments offline",
                         name, row["duration_s"], row["payments_offline"])
                changed = True
        if changed:
            self._publish()

    def _payments(self) -> bool:
        """Payments taken offline since the last look, counted against open outages."""
        pay = self.state.payments
        added = pay.queued - self._queued
        amount = pay.queued_amount - self._queued_amount
        self._queued, self._queued_amount = pay.queued, pay.queued_amount
        if added <= 0 or not self.open:
            return False
        each = [amount // added + (1 if i < amount % added else 0) for i in range(added)] \
            if amount > 0 else [0] * added
        for ident in self.open.values():
            for value in each:
                self.ledger.count_payment(ident, value)
        return False


# ---------------------------------------------------------------------- reading it


def read_rows(state_dir: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """The ledger's rows for `storebox outages` (read-only; none when there is no file)."""
    path = Path(state_dir) / FILE
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = _row
    try:
        ledger = OutageLedger.__new__(OutageLedger)
        ledger.db = conn
        return ledger.rows(since)
    finally:
        conn.close()


def as_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return out.getvalue()


def as_json(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{c: row[c] for c in COLUMNS} for row in rows]


def as_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no outages recorded"
    lines = [f"{'uplink':6} {'isp':8} {'started':25} {'duration':>10} {'by':7} "
             f"{'offline payments':>16}  cause"]
    for r in rows:
        duration = "ongoing" if r["ended_at"] is None else f"{r['duration_s']:.0f} s"
        lines.append(f"{r['uplink']:6} {r['isp'] or '-':8} {r['started_at']:25} "
                     f"{duration:>10} {r['detected_by']:7} "
                     f"{r['payments_offline']:>5} ({r['payments_offline_amount']:>9})  "
                     f"{r['cause_hint'] or ''}")
    return "\n".join(lines)
