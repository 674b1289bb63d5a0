"""The fleet's MQTT topics (docs/mqtt.md), all under `storebox/<device.id>/`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Event kinds published on `events` (docs/mqtt.md); the box's other events stay local.
EVENT_KINDS = frozenset({
    "failover", "failback", "modem_reset", "offline_mode", "queue_drained",
    "declined_after_offline", "fault",
})

ONLINE = b"online"
OFFLINE = b"offline"
#: Revision 2 (docs/mqtt.md): kinds the box adds; consumers ignore kinds they do not know.
#: `steer`/`unsteer`: the gateway's traffic moved to LTE around a wired brownout and back.
EVENT_KINDS_REV2 = frozenset({"outage", "steer", "unsteer"})

#: Every topic of every box, for the fleet's back end (docs/cli.md).
ALL_BOXES = "storebox/+/#"

#: The fleet-wide desired-config document (retained, signed, versioned). Outside
#: `storebox/+/`, so no consumer of ALL_BOXES takes "fleet" for a box id and a box whose
#: device.id is "fleet" collides with nothing.
DESIRED_CONFIG = "storebox-fleet/desired-config"
#: The `name` of the `cmd_result` a box sends about a desired-config document.
DESIRED_CONFIG_RESULT = "desired-config"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def canonical_message(device_id: str, name: str, command_id: str, args: dict[str, Any],
                      expires_at: str) -> bytes:
    """The bytes the operator signs (and the box verifies) for one command."""
    return _canonical({"device_id": device_id, "name": name, "id": command_id, "args": args,
                       "expires_at": expires_at})


def config_message(version: int, issued_at: str, settings: dict[str, Any]) -> bytes:
    """The bytes the operator signs (and every box verifies) for one desired-config
    document: fleet-wide, so bound to no device; `kind` keeps a command's signature from
    ever verifying as a config's (their fields differ too)."""
    return _canonical({"kind": DESIRED_CONFIG_RESULT, "version": version,
                       "issued_at": issued_at, "settings": settings})


def status_payload(status: str, session: str, since: datetime) -> bytes:
    """The retained `status` payload (docs/mqtt.md): the birth message and the Last Will
    of one connection carry the same `session`."""
    return json.dumps({"status": status, "session": session, "since": since.isoformat()},
                      separators=(",", ":")).encode()


def parse_status(payload: bytes | str) -> dict[str, Any]:
    """`{"status", "session", "since"}` from a `status` payload; a revision-1 payload
    (plain `online`/`offline`) gives session and since None."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    text = text.strip()
    if text in ("online", "offline"):
        return {"status": text, "session": None, "since": None}
    try:
        doc = json.loads(text)
    except ValueError:
        return {"status": None, "session": None, "since": None}
    if not isinstance(doc, dict):
        return {"status": None, "session": None, "since": None}
    status = doc.get("status") if doc.get("status") in ("online", "offline") else None
    session = doc.get("session")
    since = doc.get("since")
    return {"status": status, "session": session if isinstance(session, str) else None,
            "since": since if isinstance(since, str) else None}


def split_topic(topic: str) -> tuple[str, str] | None:
    """(device id, the rest) for `storebox/<id>/<rest>`; None for anything else."""
    parts = topic.split("/", 2)
    if len(parts) != 3 or parts[0] != "storebox" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class Topics:
    root: str

    @property
    def status(self) -> str:
        """Retained `online` (birth) / `offline` (Last Will, clean shutdown)."""
        return f"{self.root}/status"

    @property
    def state(self) -> str:
        """Retained status document (docs/schemas/status.json)."""
        return f"{self.root}/state"

    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def commands(self) -> str:
        """The subscription filter for every command."""
        return f"{self.root}/cmd/+"

    @property
    def command_result(self) -> str:
        return f"{self.root}/cmd_result"

    def command_name(self, topic: str) -> str | None:
        """`ping` for `storebox/<id>/cmd/ping`; None for anything else."""
        prefix = f"{self.root}/cmd/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix):]
        return name if name and "/" not in name else None


def topics_for(device_id: str) -> Topics:
    return Topics(f"storebox/{device_id}")
