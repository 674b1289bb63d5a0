"""What the fleet server knows: every box's presence and state, its events (de-duplicated
by `seq`), and the incidents derived from them. Pure logic: each message comes in with
the time it arrived; `tick(now)` closes incidents whose shops are back and stable.

Changes are handed to `on_change` (the server's database writer and its event stream)
as small dicts: `{"type": "box"|"event"|"incident", ...}`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from firmware.fleet.topics import parse_status, split_topic
from firmware.fleet_server.config import FleetServerConfig


@dataclass
class Box:
    device_id: str
    online: bool = False
    session: str | None = None
    status_since: str | None = None
    last_seen: datetime | None = None
    state_at: datetime | None = None
    state: dict[str, Any] = field(default_factory=dict)
    last_seq: int = 0
    duplicates: int = 0

    @property
    def isp(self) -> str:
        return str((self.state.get("site") or {}).get("isp") or "")

    @property
    def region(self) -> str:
        return str((self.state.get("site") or {}).get("region") or "")

    def link(self, name: str) -> dict[str, Any]:
        value = (self.state.get("uplink") or {}).get(name) or {}
        return value if isinstance(value, dict) else {}

    @property
    def wired_down(self) -> bool:
        return self.link("wired").get("state") == "down"

    @property
    def without_failover(self) -> bool:
        """LTE cannot carry the shop: down (or not known to work), or on the failing
        carrier (`modem.same_carrier_as_wired`), or the box is gone altogether."""
        if not self.online:
            return True
        if (self.state.get("modem") or {}).get("same_carrier_as_wired") is True:
            return True
        return self.link("lte").get("state") not in ("up", "standby", "degraded")

    def presence(self, now: datetime, stale_after_s: float) -> str:
        if not self.online:
            return "offline"
        if self.state_at is None or (now - self.state_at).total_seconds() > stale_after_s:
            return "stale"
        return "online"

    def to_json(self, now: datetime, stale_after_s: float) -> dict[str, Any]:
        pay = self.state.get("payments") or {}
        return {
            "device_id": self.device_id, "online": self.online,
            "presence": self.presence(now, stale_after_s), "session": self.session,
            "active": (self.state.get("uplink") or {}).get("active"),
            "wired": self.link("wired"), "lte": self.link("lte"),
            "queued": pay.get("queued"), "queued_amount": pay.get("queued_amount"),
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "state_at": self.state_at.isoformat() if self.state_at else None,
            "isp": self.isp, "region": self.region,
            "version": self.state.get("version"),
            "config_version": self.state.get("config_version"),
            "modem": {k: (self.state.get("modem") or {}).get(k)
                      for k in ("operator", "same_carrier_as_wired", "signal_dbm")},
            "last_seq": self.last_seq,
        }


@dataclass
class Member:
    down_at: datetime
    back_at: datetime | None = None


@dataclass
class Incident:
    id: int
    isp: str
    started_at: datetime
    members: dict[str, Member] = field(default_factory=dict)
    ended_at: datetime | None = None
    kind: str = "wired_down"
    region: str = ""
    boxes_affected: int = 0
    boxes_without_failover: int = 0
    title: str = ""
    #: A shop incident found to be part of a fleet-wide loss: that incident's id.
    folded_into: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "isp": self.isp, "region": self.region,
                "started_at": self.started_at.isoformat(),
                "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "boxes_affected": self.boxes_affected,
                "boxes_without_failover": self.boxes_without_failover,
                "boxes_back": sum(1 for m in self.members.values() if m.back_at),
                "title": self.title, "devices": sorted(self.members),
                "folded_into": self.folded_into}


Change = dict[str, Any]
#: The open incidents' key of the fleet-wide one (it has no ISP).
FLEET = ""


def _title(incident: Incident, affected: int, down: int, without: int, region: str,
           in_region: int) -> str:
    """The incident in plain words."""
    since = incident.started_at.strftime("%H:%M:%S")
    ended = f"; ended {incident.ended_at.strftime('%H:%M:%S')}" if incident.ended_at else ""
    if incident.kind == "fleet_unreachable":
        return (f"Fleet unreachable: {affected} boxes went offline at once since {since} "
                f"({down} still offline): the broker or the operator's network, not the "
                f"shops{ended}")
    shops = "shop" if affected == 1 else "shops"
    where = f" ({region} {in_region})" if region else ""
    title = (f"{incident.isp} wired down at {affected} {shops}{where} since {since}; "
             f"{without} without failover{ended}")
    if incident.folded_into is not None:
        title += f"; part of the fleet-wide incident #{incident.folded_into}"
    return title


class FleetModel:
    def __init__(self, config: FleetServerConfig,
                 on_change: Callable[[Change], None] | None = None, *,
                 defer_recount: bool = False) -> None:
        self.config = config
        #: Open incidents changed since the last `settle()` (with `defer_recount` only).
        self.defer_recount = defer_recount
        self.unsettled: dict[int, Incident] = {}
        #: Online boxes per ISP, kept as statuses and states come; None until first
        #: asked (then counted from `boxes`, which the server fills from its database).
        self._online_by_isp: Counter[str] | None = None
        self.boxes: dict[str, Box] = {}
        self.incidents: list[Incident] = []
        self.open: dict[str, Incident] = {}
        #: Wired-down (or gone offline) changes not in an incident: isp -> device -> when.
        self.recent: dict[str, dict[str, datetime]] = {}
        #: Boxes gone offline within the window, whatever their ISP (a fleet-wide loss).
        self.gone: dict[str, datetime] = {}
        self.on_change = on_change or (lambda change: None)
        self.events_stored = 0
        self.duplicates = 0
        self.ignored_wills = 0
        self.messages = 0
        #: state and event payloads that were not JSON objects (a box's bug, not ours)
        self.malformed = 0
        #: The last incident id given (ids continue after those in the database).
        self.id_base = 0

    @property
    def stale_after_s(self) -> float:
        return self.config.state_period_s * self.config.stale_factor

    # ------------------------------------------------------------------ ingest

    def handle(self, topic: str, payload: bytes, now: datetime) -> None:
        parts = split_topic(topic)
        if parts is None:
            return
        device, rest = parts
        self.messages += 1
        box = self.boxes.get(device)
        if box is None:
            box = self.boxes[device] = Box(device)
        box.last_seen = now
        if rest == "status":
            self._status(box, payload, now)
        elif rest == "state":
            self._state(box, payload, now)
        elif rest == "events":
            self._event(box, payload, now)

    def _status(self, box: Box, payload: bytes, now: datetime) -> None:
        doc = parse_status(payload)
        was_online = box.online
        if doc["status"] == "online":
            box.online, box.session, box.status_since = True, doc["session"], doc["since"]
        elif doc["status"] == "offline":
            if doc["session"] is not None and box.session is not None \
                    and doc["session"] != box.session:
                self.ignored_wills += 1  # a late Will: the box has reconnected since
                return
            box.online, box.status_since = False, doc["since"]
        else:
            return
        if was_online != box.online:
            self._count(box.isp, 1 if box.online else -1)
        self._box_changed(box)
        if was_online and not box.online:
            if not self._fleet_loss(box, now):
                self._went_down(box, now)
        elif box.online and not was_online:
            self._fleet_member_back(box, now)
            if not box.wired_down:
                self._came_back(box, now)

    def _state(self, box: Box, payload: bytes, now: datetime) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.malformed += 1
            return
        was_down = box.wired_down and bool(box.state)
        isp = box.isp
        box.state, box.state_at = doc, now
        if box.online and box.isp != isp:
            self._count(isp, -1)
            self._count(box.isp, 1)
        self._box_changed(box)
        if box.wired_down and not was_down:
            self._went_down(box, now)
        elif was_down and not box.wired_down:
            self._came_back(box, now)
        else:
            self._refresh_incident(box)

    def _event(self, box: Box, payload: bytes, now: datetime) -> None:
        try:
            doc = json.loads(payload)
            seq = int(doc["seq"])
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        if seq <= box.last_seq:  # a QoS 1 redelivery, or older than what we have
            box.duplicates += 1
            self.duplicates += 1
            return
        box.last_seq = seq
        self.on_change({"type": "seq", "box": box})  # the box row's last_seq, no history
        self.events_stored += 1
        self.on_change({"type": "event", "device_id": box.device_id, "seq": seq,
                        "kind": doc.get("kind"), "at": doc.get("at"),
                        "received_at": now.isoformat(), "doc": doc})

    def _box_changed(self, box: Box) -> None:
        self.on_change({"type": "box", "box": box})

    # ------------------------------------------------------------------ incidents

    def _went_down(self, box: Box, now: datetime) -> None:
        isp = box.isp
        if not isp:
            return
        incident = self.open.get(isp)
        if incident is not None:
            member = incident.members.get(box.device_id)
            if member is None:
                incident.members[box.device_id] = Member(now)
            else:
                member.back_at = None
            self._refresh(incident)
            return
        window = timedelta(seconds=self.config.incident_window_s)
        recent = self.recent.setdefault(isp, {})
        recent.setdefault(box.device_id, now)
        for device, at in list(recent.items()):
            if now - at > window:
                del recent[device]
        # the ISP's online shops and those of the window gone offline since: counted as
        # they change, not by walking every box per message (1,000 Wills in a few seconds
        # were 1,000 walks of 10,000 boxes, BENCHMARKS.md "Fleet")
        online = self._online_of(isp) + sum(
            1 for d in recent if (b := self.boxes.get(d)) is not None and not b.online
            and b.isp == isp)
        n = len(recent)
        if n >= self.config.incident_min_boxes and \
                n >= self.config.incident_min_share * online:
            self.id_base += 1
            incident = Incident(self.id_base, isp, min(recent.values()),
                                {d: Member(at) for d, at in recent.items()})
            self.incidents.append(incident)
            self.open[isp] = incident
            recent.clear()
            self._refresh(incident)

    def _fleet_loss(self, box: Box, now: datetime) -> bool:
        """Whether `box` going offline is part of a sudden loss of most of the fleet (then
        it joins that one incident, not its ISP's): at least `fleet_lost_share` of the
        boxes online a window ago went offline within `incident_window_s`, across ISPs (at
        least two: the shops of one ISP going offline together are that ISP's outage).
        Thousands of shops do not lose power at once; the broker, or the operator's own
        network, does. Shop incidents opened by those same losses within the window are
        folded into it."""
        window = timedelta(seconds=self.config.incident_window_s)
        self.gone[box.device_id] = now
        for device, at in list(self.gone.items()):
            if now - at > window:
                del self.gone[device]
        incident = self.open.get(FLEET)
        if incident is not None:
            incident.members.setdefault(box.device_id, Member(now)).back_at = None
            self._refresh(incident)
            return True
        total = sum(self._online().values()) + len(self.gone)
        isps = {self.boxes[d].isp for d in self.gone if d in self.boxes}
        if len(isps) < 2 or len(self.gone) < max(self.config.incident_min_boxes,
                                                 self.config.fleet_lost_share * total):
            return False  # one ISP's shops (or a fleet of one) is that ISP's outage
        self.id_base += 1
        incident = Incident(self.id_base, FLEET, min(self.gone.values()),
                            {d: Member(at) for d, at in self.gone.items()},
                            kind="fleet_unreachable")
        self.incidents.append(incident)
        self.open[FLEET] = incident
        self._fold_shop_incidents(incident, now - window, now)
        self._recount(incident)
        return True

    def _fold_shop_incidents(self, fleet: Incident, since: datetime, now: datetime) -> None:
        for isp, incident in list(self.open.items()):
            if isp == FLEET or incident.started_at < since:
                continue
            if any(self.boxes[d].online for d in incident.members if d in self.boxes):
                continue  # a shop still online went wired-down: a real carrier outage
            incident.folded_into, incident.ended_at = fleet.id, now
            del self.open[isp]
            self._recount(incident)
        for recent in self.recent.values():
            for device in [d for d in recent if d in self.gone]:
                del recent[device]

    def _fleet_member_back(self, box: Box, now: datetime) -> None:
        self.gone.pop(box.device_id, None)
        incident = self.open.get(FLEET)
        if incident is not None and box.device_id in incident.members:
            incident.members[box.device_id].back_at = now
            self._refresh(incident)

    def _online(self) -> Counter[str]:
        """Each ISP's online boxes: counted once from the boxes, then kept as they change
        (an empty count is a count too: never walked again)."""
        if self._online_by_isp is None:
            self._online_by_isp = Counter(b.isp for b in self.boxes.values() if b.online)
        return self._online_by_isp

    def _online_of(self, isp: str) -> int:
        return self._online()[isp]

    def _count(self, isp: str, delta: int) -> None:
        if self._online_by_isp is not None:
            self._online_by_isp[isp] += delta

    def restore(self, incident: Incident) -> None:
        """An incident still open when the server stopped: it goes on, its shops with it."""
        self.incidents.append(incident)
        if incident.ended_at is None:
            self.open[incident.isp] = incident
        self.id_base = max(self.id_base, incident.id)

    def _came_back(self, box: Box, now: datetime) -> None:
        isp = box.isp
        self.recent.get(isp, {}).pop(box.device_id, None)
        incident = self.open.get(isp)
        if incident is not None and box.device_id in incident.members:
            incident.members[box.device_id].back_at = now
            self._refresh(incident)

    def _refresh_incident(self, box: Box) -> None:
        """A member's new state may change its incident's count without failover (the
        counts walk the members only: another shop's state changes nothing)."""
        incident = self.open.get(box.isp)
        if incident is not None and box.device_id in incident.members:
            self._refresh(incident)

    def _refresh(self, incident: Incident) -> None:
        if self.defer_recount and incident.title and incident.ended_at is None:
            self.unsettled[incident.id] = incident
            return
        self._recount(incident)

    def settle(self) -> None:
        """Recount the open incidents changed since the last call.

        With `defer_recount` (the server, which calls this with every batch it writes) a
        change to an open incident's shops is recounted here, not per message: a recount
        walks all its shops, and 2,000 shops of one ISP going down within 10 s were
        2,000 walks of up to 2,000 shops, with every state of a member one more
        (BENCHMARKS.md "Fleet"). Opening and closing are recounted at once."""
        unsettled, self.unsettled = self.unsettled, {}
        for incident in unsettled.values():
            self._recount(incident)

    def _recount(self, incident: Incident) -> None:
        members = [self.boxes[d] for d in incident.members if d in self.boxes]
        down = [b for b in members if incident.members[b.device_id].back_at is None]
        affected = len(incident.members)
        without = sum(1 for b in down if b.without_failover)
        regions = Counter(b.region for b in members if b.region)
        region, in_region = regions.most_common(1)[0] if regions else ("", 0)
        before = (incident.boxes_affected, incident.boxes_without_failover, incident.region,
                  incident.ended_at)
        incident.boxes_affected, incident.boxes_without_failover = affected, without
        incident.region = region
        incident.title = _title(incident, affected, len(down), without, region, in_region)
        if before != (affected, without, region, incident.ended_at) or not incident.title:
            self.on_change({"type": "incident", "incident": incident})

    def tick(self, now: datetime) -> None:
        """Close the incidents whose shops are back, enough of them for long enough."""
        stable = timedelta(seconds=self.config.incident_stable_s)
        for isp, incident in list(self.open.items()):
            members = incident.members.values()
            back = sum(1 for m in members if m.back_at is not None and now - m.back_at >= stable)
            if back >= self.config.incident_close_share * len(incident.members):
                incident.ended_at = now
                del self.open[isp]
                self._refresh(incident)

    # ------------------------------------------------------------------ views

    def boxes_json(self, now: datetime) -> list[dict[str, Any]]:
        return [self.boxes[d].to_json(now, self.stale_after_s) for d in sorted(self.boxes)]

    def incidents_json(self) -> list[dict[str, Any]]:
        self.settle()
        return [i.to_json() for i in reversed(self.incidents)]
