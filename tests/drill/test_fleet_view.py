"""What the drill shows of `fleet serve`'s view, built from its API's answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.drill.report import _fleet_lines
from lab.fleet import FleetView, fleet_server_table


def event(seq: int, kind: str, **extra: Any) -> dict[str, Any]:
    return {"at": f"2026-12-06T10:00:{seq:02d}+00:00", "what": "event", "kind": kind,
            "seq": seq, "doc": {"seq": seq, "kind": kind, **extra}}


def state(at: int, active: str) -> dict[str, Any]:
    return {"at": f"2026-12-06T10:00:{at:02d}+00:00", "what": "state", "active": active}


INCIDENT = {"id": 1, "isp": "KT", "title": "KT wired down at 1 shop since 10:00:05; "
            "1 without failover", "started_at": "2026-12-06T10:00:05+00:00",
            "ended_at": None, "boxes_affected": 1, "boxes_without_failover": 1,
            "devices": ["store-drill"]}


def test_events_state_and_the_incident_are_read_oldest_first() -> None:
    timeline = [state(30, "wired"), event(11, "offline_mode", delayed=True),
                event(6, "failover"), state(5, "lte"), state(1, "wired")]  # newest first
    view = FleetView.from_api({"online": True, "active": "wired"}, timeline, [INCIDENT],
                              {"ok": True, "malformed": 0})
    assert view.kinds() == ["failover", "offline_mode"]
    assert view.to_json() == {
        "events": 2, "delayed": 1, "kinds": ["failover", "offline_mode"],
        "status": "online", "state_changes": 3, "active": "wired", "malformed": 0,
        "incidents": 1, "incident": {k: v for k, v in INCIDENT.items() if k != "devices"}}
    assert _fleet_lines(view.to_json() | {"caught_up": True})[1] == (
        "  incident      #1 KT wired down at 1 shop since 10:00:05; 1 without failover")


def test_nothing_seen_yet() -> None:
    view = FleetView.from_api({}, [], [], {"ok": True})
    assert view.to_json() == {"events": 0, "delayed": 0, "kinds": [], "status": None,
                              "state_changes": 0, "active": None, "malformed": 0,
                              "incidents": 0, "incident": None}
    assert _fleet_lines(view.to_json())[1] == (
        "  incident      fleet serve opened none for the outage")


def test_the_drill_opens_an_incident_for_its_one_shop(tmp_path: Path) -> None:
    table = fleet_server_table(tmp_path)
    assert table["incident_min_boxes"] == 1
    assert table["database"] == str(tmp_path / "fleet.sqlite3")
