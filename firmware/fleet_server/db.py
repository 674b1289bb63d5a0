"""The fleet server's SQLite database: boxes (latest), state history, events (unique by
device and seq), incidents. Changes from the model are queued and written in one
transaction per batch (`flush`)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from firmware.fleet_server.model import Box, Change, Incident
from firmware.ledger.migrate import Migration, connect, migrate


def _m0001(conn: sqlite3.Connection) -> None:
    conn.execute("""CREATE TABLE boxes (
        device_id TEXT PRIMARY KEY, online INTEGER NOT NULL, session TEXT,
        last_seen TEXT, state_at TEXT, isp TEXT, region TEXT, last_seq INTEGER NOT NULL,
        state TEXT)""")
    conn.execute("""CREATE TABLE state_history (
        device_id TEXT NOT NULL, at TEXT NOT NULL, active TEXT, wired TEXT, lte TEXT,
        queued INTEGER, online INTEGER)""")
    conn.execute("CREATE INDEX state_history_box ON state_history (device_id, at)")
    conn.execute("""CREATE TABLE events (
        device_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT, at TEXT,
        received_at TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (device_id, seq))""")
    conn.execute("""CREATE TABLE incidents (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, isp TEXT, region TEXT,
        started_at TEXT NOT NULL, ended_at TEXT, boxes_affected INTEGER,
        boxes_without_failover INTEGER, title TEXT, devices TEXT)""")


MIGRATIONS = [Migration("0001_fleet", _m0001)]


class FleetDb:
    def __init__(self, path: str) -> None:
        self.db = connect(path)
        migrate(self.db, MIGRATIONS)
        self.boxes: dict[str, Box] = {}
        self.incidents: dict[int, Incident] = {}
        self.history: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.batches = 0

    def queue(self, change: Change) -> None:
        if change["type"] == "box":
            box: Box = change["box"]
            self.boxes[box.device_id] = box
            self.history.append((box.device_id, _iso(box.state_at or box.last_seen),
                                 (box.state.get("uplink") or {}).get("active"),
                                 box.link("wired").get("state"), box.link("lte").get("state"),
                                 (box.state.get("payments") or {}).get("queued"),
                                 int(box.online)))
        elif change["type"] == "event":
            self.events.append((change["device_id"], change["seq"], change["kind"],
                                change["at"], change["received_at"],
                                json.dumps(change["doc"], separators=(",", ":"))))
        elif change["type"] == "incident":
            incident: Incident = change["incident"]
            self.incidents[incident.id] = incident

    @property
    def pending(self) -> int:
        return len(self.boxes) + len(self.history) + len(self.events) + len(self.incidents)

    def flush(self) -> int:
        """Write what is queued in one transaction; how many rows."""
        n = self.pending
        if not n:
            return 0
        boxes, self.boxes = list(self.boxes.values()), {}
        history, self.history = self.history, []
        events, self.events = self.events, []
        incidents, self.incidents = list(self.incidents.values()), {}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO boxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) "
                "DO UPDATE SET online = excluded.online, session = excluded.session, "
                "last_seen = excluded.last_seen, state_at = excluded.state_at, "
                "isp = excluded.isp, region = excluded.region, last_seq = excluded.last_seq, "
                "state = excluded.state",
                [(b.device_id, int(b.online), b.session, _iso(b.last_seen), _iso(b.state_at),
                  b.isp, b.region, b.last_seq, json.dumps(b.state)) for b in boxes])
            self.db.executemany("INSERT INTO state_history VALUES (?, ?, ?, ?, ?, ?, ?)",
                                history)
            self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                                events)
            self.db.executemany(
                "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i.id, i.kind, i.isp, i.region, i.started_at.isoformat(), _iso(i.ended_at),
                  i.boxes_affected, i.boxes_without_failover, i.title,
                  json.dumps(sorted(i.members))) for i in incidents])
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self.batches += 1
        return n

    def load_boxes(self) -> list[Box]:
        """The boxes as last written (their presence until the broker says more)."""
        rows = self.db.execute("SELECT device_id, online, session, last_seen, state_at, "
                               "last_seq, state FROM boxes").fetchall()
        return [Box(d, bool(o), s, None, _dt(ls), _dt(sa), json.loads(st or "{}"), int(q))
                for d, o, s, ls, sa, q, st in rows]

    def last_incident_id(self) -> int:
        (n,) = self.db.execute("SELECT coalesce(max(id), 0) FROM incidents").fetchone()
        return int(n)

    def count(self, table: str) -> int:
        query = {"boxes": "SELECT count(*) FROM boxes",
                 "events": "SELECT count(*) FROM events",
                 "incidents": "SELECT count(*) FROM incidents",
                 "state_history": "SELECT count(*) FROM state_history"}[table]
        (n,) = self.db.execute(query).fetchone()
        return int(n)

    def close(self) -> None:
        self.flush()
        self.db.close()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
