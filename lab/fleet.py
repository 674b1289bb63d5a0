"""The fleet operator's side of the drill: a broker on the "internet", and `fleet serve`.

mosquitto listens on `BROKER_IP:BROKER_PORT` in the internet's namespace; the box's fleet
agent reaches it through whichever uplink works. The operator is the product's own fleet
server (`storebox fleet serve`, docs/mqtt.md "The operator's side") in the same namespace,
with its SQLite database in the drill's workdir; the drill reads what it saw through its
JSON API (docs/cli.md): the box's presence and state, its timeline of events (those of
the offline phase arriving late, marked `delayed`), and the incident it opened for the
KT outage.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from lab.errors import DrillError
from lab.netns import inside
from lab.shop import OTHER_IP

BROKER_IP = OTHER_IP
BROKER_PORT = 1883
#: Where `fleet serve` answers its API, in the internet's namespace.
SERVER_PORT = 8480
MOSQUITTO = "mosquitto"
#: Each read of the server's API waits at most this long.
API_TIMEOUT_S = 2.0


def fleet_server_table(workdir: Path) -> dict[str, Any]:
    """The drill's `[fleet_server]` (docs/cli.md).

    `incident_min_boxes = 1`: the drill has one shop, and it stands for the carrier's
    whole outage. A real fleet keeps the default (5 shops, and 2 % of the ISP's online
    shops) so that one shop's cut cable is that shop's alert, not a carrier incident; with
    the default the drill's one shop would never open one and the report could not show
    what the operator sees of the KT outage."""
    return {"mqtt_url": f"mqtt://{BROKER_IP}:{BROKER_PORT}",
            "listen": f"{BROKER_IP}:{SERVER_PORT}",
            "database": str(workdir / "fleet.sqlite3"),
            "client_id": "drill-fleet-server",
            "incident_min_boxes": 1}


class FleetBroker:
    """mosquitto in namespace `netns`, and `fleet serve` reading it."""

    def __init__(self, netns: str, workdir: Path) -> None:
        self.netns = netns
        self.workdir = workdir
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {BROKER_PORT} {BROKER_IP}\nallow_anonymous true\n"
                        f"persistence false\nlog_dest file {workdir / 'mosquitto.log'}\n"
                        "user root\n")
        self.server_config = workdir / "fleet-server.toml"
        self.server_config.write_text("# written by `storebox drill`\n" + tomli_w.dumps(
            {"fleet_server": fleet_server_table(workdir)}))
        self.server_log = workdir / "fleet-server.log"
        binary = shutil.which(MOSQUITTO) or "/usr/sbin/mosquitto"
        self.broker = subprocess.Popen(["ip", "netns", "exec", netns, binary, "-c", str(conf)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{BROKER_IP}:{SERVER_PORT}"

    def wait_listening(self, within_s: float = 20.0) -> None:
        """Wait for the broker, start `fleet serve`, wait until it is subscribed."""
        deadline = time.monotonic() + within_s
        self._wait(deadline, "fleet broker", self.broker, self._broker_listens)
        with self.server_log.open("ab") as log:
            self.server = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-m", "firmware", "fleet",
                 "serve", "--config", str(self.server_config)],
                stdout=log, stderr=subprocess.STDOUT)
        self._wait(deadline, "fleet serve", self.server, self._server_subscribed)

    def _wait(self, deadline: float, what: str, proc: subprocess.Popen[bytes],
              ready: Any) -> None:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DrillError(what, f"exited with {proc.returncode} (log in "
                                 f"{self.workdir})")
            if ready():
                return
            time.sleep(0.1)
        raise DrillError(what, f"not ready in time (log in {self.workdir})")

    def _broker_listens(self) -> bool:
        with inside(self.netns), socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((BROKER_IP, BROKER_PORT)) == 0

    def _server_subscribed(self) -> bool:
        try:
            return bool(self.get("/healthz").get("mqtt"))
        except DrillError:
            return False

    def get(self, path: str) -> Any:
        """GET the server's JSON API from inside the namespace (blocking: call it in a
        thread); DrillError when it does not answer."""
        try:
            with inside(self.netns), urllib.request.urlopen(  # noqa: S310 (our http URL)
                    self.url + path, timeout=API_TIMEOUT_S) as answer:
                return json.loads(answer.read())
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            raise DrillError("fleet serve", f"GET {path}: {exc}") from exc

    def seen(self, device_id: str) -> FleetView:
        """What the server knows of `device_id` now (empty while it knows nothing)."""
        health = self.get("/healthz")
        incidents = self.get("/api/incidents")
        try:
            box = self.get(f"/api/boxes/{device_id}")
            timeline = self.get(f"/api/boxes/{device_id}/timeline?limit=1000")
        except DrillError:
            box, timeline = {}, []
        return FleetView.from_api(box, timeline, incidents, health)

    def stop(self) -> None:
        for proc in (self.server, self.broker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass
class FleetView:
    """What the fleet server holds of the drill's box, its events oldest first."""

    events: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    active: str | None = None
    #: state changes in the box's timeline (periodic states saying nothing new fold away)
    state_changes: int = 0
    malformed: int = 0  # state/event payloads that were not JSON: the agent's bug
    #: the incidents the server opened, newest first (`GET /api/incidents`)
    incidents: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_api(cls, box: dict[str, Any], timeline: list[dict[str, Any]],
                 incidents: list[dict[str, Any]], health: dict[str, Any]) -> FleetView:
        entries = list(reversed(timeline))  # the API gives newest first
        status = None
        if box:
            status = "online" if box.get("online") else "offline"
        return cls(events=[e["doc"] for e in entries
                           if e.get("what") == "event" and isinstance(e.get("doc"), dict)],
                   status=status, active=box.get("active"),
                   state_changes=sum(1 for e in entries if e.get("what") == "state"),
                   malformed=int(health.get("malformed") or 0),
                   incidents=incidents)

    def kinds(self) -> list[str]:
        return [str(e.get("kind")) for e in self.events]

    @property
    def incident(self) -> dict[str, Any] | None:
        """The latest incident of the box's carrier outage (the drill has one)."""
        return self.incidents[0] if self.incidents else None

    def to_json(self) -> dict[str, Any]:
        incident = self.incident
        return {"events": len(self.events),
                "delayed": sum(1 for e in self.events if e.get("delayed")),
                "kinds": sorted(set(self.kinds())), "status": self.status,
                "state_changes": self.state_changes, "active": self.active,
                "malformed": self.malformed, "incidents": len(self.incidents),
                "incident": None if incident is None else
                {k: incident.get(k) for k in ("id", "isp", "title", "started_at",
                                              "ended_at", "boxes_affected",
                                              "boxes_without_failover")}}
