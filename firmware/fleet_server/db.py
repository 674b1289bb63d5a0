"""The fleet server's database: boxes (latest), state history, events (unique by device
and seq), incidents (with each shop's down/back times, so an open incident survives a
restart). Changes from the model are queued and written in one transaction per batch
(`flush`). SQLite or PostgreSQL (`backends.py`), the same SQL for both."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from firmware.fleet_server import jobs_store
from firmware.fleet_server.backends import Backend, Migration, migrate, open_backend
from firmware.fleet_server.model import Box, Change, Incident, Member

MIGRATIONS: list[Migration] = [
    ("0001_fleet", [
        """CREATE TABLE boxes (
            device_id TEXT PRIMARY KEY, online INTEGER NOT NULL, session TEXT,
            last_seen TEXT, state_at TEXT, isp TEXT, region TEXT, last_seq INTEGER NOT NULL,
            state TEXT)""",
        """CREATE TABLE state_history (
            device_id TEXT NOT NULL, at TEXT NOT NULL, active TEXT, wired TEXT, lte TEXT,
            queued INTEGER, online INTEGER)""",
        "CREATE INDEX state_history_box ON state_history (device_id, at)",
        """CREATE TABLE events (
            device_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT, at TEXT,
            received_at TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (device_id, seq))""",
        """CREATE TABLE incidents (
            id INTEGER PRIMARY KEY, kind TEXT NOT NULL, isp TEXT, region TEXT,
            started_at TEXT NOT NULL, ended_at TEXT, boxes_affected INTEGER,
            boxes_without_failover INTEGER, title TEXT, devices TEXT)"""]),
    ("0002_incident_members", [
        # device -> [down_at, back_at]: what reopening an incident after a restart needs
        "ALTER TABLE incidents ADD COLUMN members TEXT"]),
    jobs_store.MIGRATION,  # command jobs, their results, desired configs, the audit log
    jobs_store.REFUSALS_MIGRATION,  # each box's latest refusal of a desired config
]

_UPSERT_BOX = (
    "INSERT INTO boxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) "
    "DO UPDATE SET online = excluded.online, session = excluded.session, "
    "last_seen = excluded.last_seen, state_at = excluded.state_at, isp = excluded.isp, "
    "region = excluded.region, state = excluded.state, last_seq = CASE WHEN "
    "excluded.last_seq > boxes.last_seq THEN excluded.last_seq ELSE boxes.last_seq END")
_INSERT_EVENT = ("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (device_id, seq) DO NOTHING")
_UPSERT_INCIDENT = (
    "INSERT INTO incidents (id, kind, isp, region, started_at, ended_at, boxes_affected, "
    "boxes_without_failover, title, devices, members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, isp = excluded.isp, "
    "region = excluded.region, started_at = excluded.started_at, "
    "ended_at = excluded.ended_at, boxes_affected = excluded.boxes_affected, "
    "boxes_without_failover = excluded.boxes_without_failover, title = excluded.title, "
    "devices = excluded.devices, members = excluded.members")
_COUNTS = {"boxes": "SELECT count(*) FROM boxes",
           "events": "SELECT count(*) FROM events",
           "incidents": "SELECT count(*) FROM incidents",
           "state_history": "SELECT count(*) FROM state_history"}


class FleetDb:
    """Every worker writes boxes (idempotent upserts; `last_seq` only grows) and the events
    it received (unique by device and seq). State history and incidents, which every worker
    derives alike from the same status/state stream, are written by the leading worker
    only (`Backend.try_lead`; with SQLite the one worker), so none is written twice."""

    def __init__(self, database: str, backend: Backend | None = None) -> None:
        self.backend = backend or open_backend(database)
        migrate(self.backend, MIGRATIONS)
        self.boxes: dict[str, Box] = {}
        self.incidents: dict[int, Incident] = {}
        self.history: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.batches = 0
        self.leader = False
        self.history_written = 0

    def queue(self, change: Change) -> None:
        if change["type"] == "box":
            box: Box = change["box"]
            self.boxes[box.device_id] = box
            self.history.append(_history_row(box))
        elif change["type"] == "seq":
            self.boxes[change["box"].device_id] = change["box"]
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
        if not self.leader:
            self.leader = self.backend.try_lead()
        if not self.leader:  # the leader writes these
            history, incidents = [], []
        with self.backend.transaction():
            self.backend.executemany(_UPSERT_BOX, [_box_row(b) for b in boxes])
            self.backend.executemany("INSERT INTO state_history VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     history)
            self.backend.executemany(_INSERT_EVENT, events)
            self.history_written += len(history)
            self.backend.executemany(_UPSERT_INCIDENT, [_incident_row(i) for i in incidents])
        self.batches += 1
        return n

    def load_boxes(self) -> list[Box]:
        """The boxes as last written (their presence until the broker says more)."""
        rows = self.backend.execute("SELECT device_id, online, session, last_seen, state_at, "
                                    "last_seq, state FROM boxes")
        return [Box(d, bool(o), s, None, _dt(ls), _dt(sa), json.loads(st or "{}"), int(q))
                for d, o, s, ls, sa, q, st in rows]

    def load_open_incidents(self) -> list[Incident]:
        """Incidents not yet ended, with their shops' down/back times."""
        rows = self.backend.execute(
            "SELECT id, kind, isp, region, started_at, boxes_affected, "
            "boxes_without_failover, title, devices, members FROM incidents "
            "WHERE ended_at IS NULL ORDER BY id")
        return [_incident(row) for row in rows]

    def load_incident(self, iid: int) -> Incident | None:
        """One incident, open or ended, with its shops' down/back times (a claim report
        asks for incidents of earlier runs too)."""
        rows = self.backend.execute(
            "SELECT id, kind, isp, region, started_at, boxes_affected, "
            "boxes_without_failover, title, devices, members, ended_at FROM incidents "
            "WHERE id = ?", (iid,))
        if not rows:
            return None
        incident = _incident(rows[0][:10])
        incident.ended_at = _dt(rows[0][10])
        return incident

    def last_incident_id(self) -> int:
        ((n,),) = self.backend.execute("SELECT coalesce(max(id), 0) FROM incidents")
        return int(n)

    def count(self, table: str) -> int:
        ((n,),) = self.backend.execute(_COUNTS[table])
        return int(n)

    def close(self) -> None:
        self.flush()
        self.backend.close()


def _history_row(box: Box) -> tuple[Any, ...]:
    return (box.device_id, _iso(box.state_at or box.last_seen),
            (box.state.get("uplink") or {}).get("active"),
            box.link("wired").get("state"), box.link("lte").get("state"),
            (box.state.get("payments") or {}).get("queued"), int(box.online))


def _box_row(b: Box) -> tuple[Any, ...]:
    return (b.device_id, int(b.online), b.session, _iso(b.last_seen), _iso(b.state_at),
            b.isp, b.region, b.last_seq, json.dumps(b.state))


def _incident_row(i: Incident) -> tuple[Any, ...]:
    members = {d: [_iso(m.down_at), _iso(m.back_at)] for d, m in i.members.items()}
    return (i.id, i.kind, i.isp, i.region, i.started_at.isoformat(), _iso(i.ended_at),
            i.boxes_affected, i.boxes_without_failover, i.title,
            json.dumps(sorted(i.members)), json.dumps(members, sort_keys=True))


def _incident(row: tuple[Any, ...]) -> Incident:
    iid, kind, isp, region, started, affected, without, title, devices, members = row
    started_at = datetime.fromisoformat(started)
    if members:
        found = {d: Member(datetime.fromisoformat(down), _dt(back))
                 for d, (down, back) in json.loads(members).items()}
    else:  # written before 0002: the shops, not their times
        found = {d: Member(started_at) for d in json.loads(devices or "[]")}
    return Incident(int(iid), isp, started_at, found, None, kind, region or "",
                    int(affected or 0), int(without or 0), title or "")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
