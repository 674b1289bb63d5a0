"""An incident's claim report: for each of its shops, how long the wired line was out and
how many payments (count, amount) were taken offline meanwhile: the evidence for the ISP
compensation claim (docs/cli.md).

The minutes and payments come from the boxes' own outage ledgers (each ended outage is an
`outage` event: `uplink, isp, started_at, ended_at, duration_s, detected_by, cause_hint,
payments_offline, payments_offline_amount`), not from what the fleet server saw: the
ledger counts from the moment the box lost the line, through broker and server outages,
to the moment it worked again. Wired outages only (the incident is the wired ISP's; the
box counts a payment against every outage open at the time, so adding LTE's would count
payments twice). The fleet's own view (`down_at`, `back_at`, `fleet_minutes`) stands
beside it, and `evidence` says when a shop's ledger row has not arrived yet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from firmware.fleet_server.model import Box, Incident

#: The columns of `claim.csv`, in order.
COLUMNS = ("incident", "device_id", "isp", "region", "down_at", "back_at", "fleet_minutes",
           "outages", "outage_started_at", "outage_ended_at", "outage_minutes",
           "payments_offline", "payments_offline_amount", "evidence")


def claim_rows(incident: Incident, boxes: Mapping[str, Box],
               outages: Mapping[str, list[dict[str, Any]]], now: datetime,
               margin: timedelta) -> list[dict[str, Any]]:
    """One row per shop of the incident, by device id. An outage counts when it overlaps
    the incident, widened by `margin` before its start (a box's own clock and the
    grouping window put the first losses a little before the incident's start)."""
    start = incident.started_at - margin
    end = incident.ended_at or now
    rows = []
    for device in sorted(incident.members):
        member = incident.members[device]
        box = boxes.get(device)
        found = [o for o in outages.get(device, []) if _overlaps(o, start, end)]
        fleet_end = member.back_at or incident.ended_at or now
        rows.append({
            "incident": incident.id, "device_id": device,
            "isp": box.isp if box else incident.isp, "region": box.region if box else "",
            "down_at": member.down_at.isoformat(),
            "back_at": member.back_at.isoformat() if member.back_at else None,
            "fleet_minutes": _minutes((fleet_end - member.down_at).total_seconds()),
            "outages": len(found),
            "outage_started_at": min((o["started_at"] for o in found), default=None),
            "outage_ended_at": max((o["ended_at"] for o in found), default=None),
            "outage_minutes": _minutes(sum(float(o.get("duration_s") or 0) for o in found)),
            "payments_offline": sum(int(o.get("payments_offline") or 0) for o in found),
            "payments_offline_amount": sum(int(o.get("payments_offline_amount") or 0)
                                           for o in found),
            "evidence": _evidence(bool(found), member.back_at is None and
                                  incident.ended_at is None),
        })
    return rows


def _overlaps(outage: dict[str, Any], start: datetime, end: datetime) -> bool:
    if outage.get("uplink") != "wired":
        return False
    try:
        began = datetime.fromisoformat(str(outage["started_at"]))
        ended = datetime.fromisoformat(str(outage["ended_at"]))
    except (KeyError, ValueError):
        return False
    if began.tzinfo is None or ended.tzinfo is None:
        return False
    return began <= end and ended >= start


def _evidence(from_ledger: bool, still_down: bool) -> str:
    if from_ledger:
        return "ledger"
    if still_down:
        return "still down: the ledger row comes when the line is back"
    return "no ledger row received yet"


def _minutes(seconds: float) -> float:
    return round(max(0.0, seconds) / 60, 1)


def totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The claim's sums: shops, shops with ledger evidence, minutes, payments."""
    rows = list(rows)
    return {"shops": len(rows),
            "shops_with_ledger": sum(1 for r in rows if r["outages"]),
            "outage_minutes": round(sum(r["outage_minutes"] for r in rows), 1),
            "payments_offline": sum(r["payments_offline"] for r in rows),
            "payments_offline_amount": sum(r["payments_offline_amount"] for r in rows)}


def as_csv(rows: Iterable[dict[str, Any]]) -> str:
    """`claim.csv`: `COLUMNS`, an empty cell for what is not known (None)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
