"""What the database remembers of one shop: the state history and events of its timeline,
and the outage-ledger rows it sent as `outage` events (docs/cli.md).

The model holds the present (every box's latest state); the past is only in the database,
which several ingest workers may share, so these read it (the caller flushes first, so
what this worker has just received is there too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from firmware.fleet_server.backends import Backend

#: State messages come at least every minute, most of them unchanged: a timeline of `limit`
#: entries reads this many times as many history rows and keeps the changes.
HISTORY_READ_FACTOR = 5
#: Devices per `IN (...)` list (well under SQLite's and PostgreSQL's parameter limits).
CHUNK = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timeline(backend: Backend, device_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The shop's state changes and events, newest first, at most `limit`.

    A state entry: `{"at", "what": "state", "online", "active", "wired", "lte", "queued",
    "text"}`; an event: `{"at", "what": "event", "kind", "seq", "severity", "text",
    "doc"}` (`text` in plain words for the dashboard and the CLI)."""
    history = backend.execute(
        "SELECT at, active, wired, lte, queued, online FROM state_history "
        "WHERE device_id = ? ORDER BY at DESC LIMIT ?",
        (device_id, limit * HISTORY_READ_FACTOR))
    events = backend.execute(
        "SELECT seq, kind, at, received_at, doc FROM events WHERE device_id = ? "
        "ORDER BY seq DESC LIMIT ?", (device_id, limit))
    entries = _state_changes(history) + [_event_entry(row) for row in events]
    entries.sort(key=lambda e: _when(e["at"]), reverse=True)
    return entries[:limit]


def _state_changes(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """History rows (newest first) reduced to the changes: a row equal to the one before
    it in time is the periodic state saying nothing new."""
    out: list[dict[str, Any]] = []
    last: tuple[Any, ...] | None = None
    for at, active, wired, lte, queued, online in reversed(rows):
        key = (active, wired, lte, queued, online)
        if key == last:
            continue
        last = key
        out.append({"at": at, "what": "state", "online": bool(online), "active": active,
                    "wired": wired, "lte": lte, "queued": queued,
                    "text": _state_text(bool(online), active, wired, lte, queued)})
    return out


def _state_text(online: bool, active: Any, wired: Any, lte: Any, queued: Any) -> str:
    if not online:
        return "offline (the box left the broker)"
    if active is None and wired is None and lte is None:
        return "online; no state received yet"
    parts = [f"on {active}" if active else "no uplink active",
             f"wired {wired or '?'}", f"LTE {lte or '?'}"]
    if queued:
        parts.append(f"{queued} payments queued offline")
    return ", ".join(parts)


def _event_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, kind, at, received_at, text = row
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    return {"at": at or received_at, "what": "event", "kind": kind, "seq": int(seq),
            "severity": doc.get("severity"),
            "text": str(doc.get("message") or kind or "event"), "doc": doc}


def _when(value: Any) -> datetime:
    """An entry's time for ordering (box clocks and ours: aware ISO-8601; junk first)."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return _EPOCH
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def outage_rows(backend: Backend, devices: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Each device's outage-ledger rows as received in `outage` events, oldest first; a row
    sent twice (a box restarted before the broker acknowledged it: a new `seq`, the same
    ledger `id`) counts once."""
    wanted = sorted(set(devices))
    found: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, Any]] = set()
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start:start + CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = backend.execute(
            "SELECT device_id, doc FROM events WHERE kind = 'outage' "  # noqa: S608 (only ?s)
            f"AND device_id IN ({marks}) ORDER BY device_id, seq", chunk)
        for device, text in rows:
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if not isinstance(doc, dict) or (device, doc.get("id")) in seen:
                continue
            if doc.get("id") is not None:
                seen.add((device, doc.get("id")))
            found.setdefault(device, []).append(doc)
    return found
