"""What the drill's fleet operator saw, read back from its JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from lab.fleet import FleetView


def line(topic: str, payload: object) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return json.dumps({"topic": f"storebox/store-drill/{topic}", "payload": text,
                       "retain": False, "at": 0.0})


def test_events_status_and_state_are_read_in_order(tmp_path: Path) -> None:
    seen = tmp_path / "fleet-seen.jsonl"
    seen.write_text("\n".join([
        line("status", "online"),
        line("state", {"uplink": {"active": "wired"}}),
        line("events", {"seq": 6, "kind": "failover"}),
        line("status", "offline"),
        line("events", {"seq": 11, "kind": "offline_mode", "delayed": True}),
        line("status", "online"),
        line("state", {"uplink": {"active": "lte"}}),
        line("state", '{"uplink":{"lte":{"latency_ms":2.105836…0145}}}'),  # mangled
        '{"topic": "storebox/store-drill/events", "payl',  # cut short by a stop
    ]) + "\n")
    view = FleetView.read(seen)
    assert view.kinds() == ["failover", "offline_mode"]
    assert view.to_json() == {"events": 2, "delayed": 1, "kinds": ["failover", "offline_mode"],
                              "status": "online", "state_messages": 3, "active": "lte",
                              "malformed": 1}


def test_nothing_seen_yet(tmp_path: Path) -> None:
    view = FleetView.read(tmp_path / "missing.jsonl")
    assert view.to_json() == {"events": 0, "delayed": 0, "kinds": [], "status": None,
                              "state_messages": 0, "active": None, "malformed": 0}
