"""The fleet operator's side of the drill: a broker on the "internet", and a subscriber.

mosquitto listens on `BROKER_IP:BROKER_PORT` in the internet's namespace; the box's fleet
agent reaches it through whichever uplink works. The operator is a subprocess in the
same namespace (`python -m lab.fleet`) that subscribes to `storebox/#` and
writes every message as a JSON line, so the drill can show what the fleet saw of the
outage: the box's events (those of the offline phase arriving late, marked `delayed`),
its retained `status` and `state`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.fleet.topics import parse_status
from lab.errors import DrillError
from lab.netns import inside
from lab.shop import OTHER_IP

BROKER_IP = OTHER_IP
BROKER_PORT = 1883
MOSQUITTO = "mosquitto"


class FleetBroker:
    """mosquitto in namespace `netns`, and the operator subscribed to it."""

    def __init__(self, netns: str, workdir: Path) -> None:
        self.netns = netns
        self.seen_path = workdir / "fleet-seen.jsonl"
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {BROKER_PORT} {BROKER_IP}\nallow_anonymous true\n"
                        f"persistence false\nlog_dest file {workdir / 'mosquitto.log'}\n"
                        "user root\n")
        binary = shutil.which(MOSQUITTO) or "/usr/sbin/mosquitto"
        self.broker = subprocess.Popen(["ip", "netns", "exec", netns, binary, "-c", str(conf)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.operator: subprocess.Popen[bytes] | None = None

    def wait_listening(self, within_s: float = 10.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.broker.poll() is not None:
                raise DrillError("fleet broker", f"mosquitto exited with {self.broker.returncode}")
            with inside(self.netns), socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((BROKER_IP, BROKER_PORT)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise DrillError("fleet broker", f"not listening within {within_s:g} s")
        self.operator = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "lab.fleet",
             "--host", BROKER_IP, "--port", str(BROKER_PORT), "--out", str(self.seen_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def seen(self) -> FleetView:
        return FleetView.read(self.seen_path)

    def stop(self) -> None:
        for proc in (self.operator, self.broker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass
class FleetView:
    """What the operator received, in order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    active: str | None = None
    states: int = 0
    malformed: int = 0  # events/state payloads that were not JSON: the agent's bug

    @classmethod
    def read(cls, path: Path) -> FleetView:
        view = cls()
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return view
        for line in lines:
            try:
                message = json.loads(line)
                topic = str(message["topic"]).rsplit("/", 1)[-1]
                payload = str(message["payload"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a stop
            try:
                if topic == "events":
                    view.events.append(json.loads(payload))
                elif topic == "status":
                    view.status = str(parse_status(payload)["status"])
                elif topic == "state":
                    view.states += 1
                    view.active = json.loads(payload).get("uplink", {}).get("active")
            except (ValueError, AttributeError):
                view.malformed += 1
        return view

    def kinds(self) -> list[str]:
        return [str(e.get("kind")) for e in self.events]

    def to_json(self) -> dict[str, Any]:
        return {"events": len(self.events),
                "delayed": sum(1 for e in self.events if e.get("delayed")),
                "kinds": sorted(set(self.kinds())), "status": self.status,
                "state_messages": self.states, "active": self.active,
                "malformed": self.malformed}


async def _subscribe(host: str, port: int, out: Path) -> None:
    import aiomqtt

    with out.open("a") as sink:
        while True:
            try:
                async with aiomqtt.Client(host, port, identifier="drill-operator") as client:
                    await client.subscribe("storebox/#", qos=1)
                    async for message in client.messages:
                        payload = message.payload
                        text = (payload.decode(errors="replace")
                                if isinstance(payload, bytes | bytearray) else str(payload))
                        sink.write(json.dumps({"topic": str(message.topic), "payload": text,
                                               "retain": message.retain,
                                               "at": time.time()}) + "\n")
                        sink.flush()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # the broker is starting or restarting


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the drill's fleet operator: subscribes "
                                     "to storebox/# and writes each message as a JSON line")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=BROKER_PORT)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_subscribe(args.host, args.port, Path(args.out)))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
