"""`storebox fleet serve` (docs/cli.md) against a real mosquitto: a small box simulator
publishes the contract for ~50 boxes from one process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from firmware.cli.main import main
from firmware.fleet.topics import status_payload
from firmware.fleet_server.config import from_dict
from firmware.fleet_server.model import FleetModel
from firmware.fleet_server.server import FleetServer
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import PostgresServer

T0 = datetime(2021, 10, 25, 11, 20, 13, tzinfo=UTC)


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path) as b:
        yield b


def state(isp: str, region: str, wired: str = "up", lte: str = "standby",
          same_carrier: bool = False) -> dict[str, Any]:
    return {"device_id": "x", "uplink": {"active": "wired" if wired == "up" else "lte",
                                         "wired": {"state": wired}, "lte": {"state": lte}},
            "modem": {"same_carrier_as_wired": same_carrier, "operator": "SKT"},
            "payments": {"queued": 0}, "site": {"isp": isp, "region": region},
            "config_version": "abc"}


#: Ten shops on each of three ISPs, as `(device, isp)`.
THREE_ISPS = [(f"{isp.lower()}-{i}", isp) for isp in ("KT", "SKT", "LG") for i in range(10)]


def online_model(config: dict[str, Any], boxes: list[tuple[str, str]]) -> FleetModel:
    """A fleet model with `config` in which every `(device, isp)` of `boxes` came online at
    T0 (boot `<device>-1`), its wired line up, in Seoul."""
    model = FleetModel(from_dict(config))
    for device, isp in boxes:
        model.handle(f"storebox/{device}/status", status_payload("online", f"{device}-1", T0),
                     T0)
        model.handle(f"storebox/{device}/state", json.dumps(state(isp, "Seoul")).encode(), T0)
    return model


class Simulator:
    """Many boxes over one MQTT connection (no Will: presence tests use their own)."""

    def __init__(self, port: int) -> None:
        self.client = aiomqtt.Client("127.0.0.1", port, identifier="box-simulator")

    async def __aenter__(self) -> Simulator:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(None, None, None)

    async def status(self, device: str, status: str, session: str) -> None:
        await self.client.publish(f"storebox/{device}/status",
                                  status_payload(status, session, T0), qos=1, retain=True)

    async def state(self, device: str, doc: dict[str, Any]) -> None:
        await self.client.publish(f"storebox/{device}/state", json.dumps(doc), qos=1,
                                  retain=True)

    async def event(self, device: str, seq: int, kind: str = "fault") -> None:
        await self.client.publish(f"storebox/{device}/events", json.dumps(
            {"seq": seq, "kind": kind, "session": "b-1", "at": T0.isoformat()}), qos=1)


@contextlib.asynccontextmanager
async def fleet_server(database: str, broker: Mosquitto,
                       **extra: Any) -> AsyncIterator[FleetServer]:
    config = from_dict({"mqtt_url": broker.url, "listen": "127.0.0.1:0",
                        "database": database, "flush_s": 0.1, **extra})
    server = FleetServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def get(server: FleetServer, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def until(server: FleetServer, check: Any) -> None:
    async with asyncio.timeout(10):
        await server.until(check)


async def test_ingest_of_50_boxes_retained_and_events_deduplicated_by_seq(
        database: str, broker: Mosquitto) -> None:
    async with Simulator(broker.port) as sim:
        for i in range(50):
            device = f"shop-{i:03d}"
            await sim.status(device, "online", f"boot-{i}-1")
            await sim.state(device, state("KT" if i % 2 else "SKT", "Seoul" if i < 30 else "Busan"))
        # the server starts after the boxes: it learns them from the retained messages
        async with fleet_server(database, broker) as server:
            await until(server, lambda: len(server.model.boxes) == 50 and all(
                b.state for b in server.model.boxes.values()))
            for seq in (1, 2, 2, 3, 1):  # QoS 1 redeliveries
                await sim.event("shop-007", seq)
            await until(server, lambda: server.model.boxes["shop-007"].last_seq == 3
                        and server.model.duplicates == 2)
            boxes = await get(server, "/api/boxes")
            assert len(boxes) == 50 and all(b["online"] for b in boxes)
            seven = next(b for b in boxes if b["device_id"] == "shop-007")
            assert (seven["isp"], seven["region"], seven["active"], seven["presence"]) == \
                ("KT", "Seoul", "wired", "online")
            assert {"device_id", "online", "active", "wired", "lte", "queued", "last_seen",
                    "isp", "region"} <= seven.keys()
            kt = await get(server, "/api/boxes?where=isp=KT&where=region=Busan")
            assert len(kt) == 10
            await until(server, lambda: server.db.pending == 0)
            assert server.db.count("events") == 3 and server.db.count("boxes") == 50
            assert server.db.batches < 60  # written in batches, not a transaction a message


async def test_presence_a_late_will_never_marks_a_reconnected_box_offline(
        database: str, broker: Mosquitto) -> None:
    def box_client(name: str, session: str) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", broker.port, identifier=name, will=aiomqtt.Will(
            "storebox/shop-1/status", status_payload("offline", session, T0), qos=1,
            retain=True))

    async with fleet_server(database, broker) as server:
        old, new = box_client("old-conn", "boot-1"), box_client("new-conn", "boot-2")
        await old.__aenter__()
        await old.publish("storebox/shop-1/status", status_payload("online", "boot-1", T0),
                          qos=1, retain=True)
        await until(server, lambda: "shop-1" in server.model.boxes and
                    server.model.boxes["shop-1"].online)
        await new.__aenter__()
        await new.publish("storebox/shop-1/status", status_payload("online", "boot-2", T0),
                          qos=1, retain=True)
        await until(server, lambda: server.model.boxes["shop-1"].session == "boot-2")
        sock = old._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the old link dies late: its Will arrives now
        await until(server, lambda: server.model.ignored_wills == 1)
        (box,) = await get(server, "/api/boxes")
        assert box["online"] is True and box["session"] == "boot-2"
        # the state never came: a box that is online but says nothing is stale
        assert box["presence"] == "stale"
        sock = new._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # now the latest session's Will: offline
        await until(server, lambda: not server.model.boxes["shop-1"].online)
        (box,) = await get(server, "/api/boxes?where=online=false")
        assert box["presence"] == "offline"
        for client in (old, new):
            with contextlib.suppress(Exception):
                client._client._sock_close()


async def test_a_carrier_outage_is_one_incident_with_the_right_counts(
        database: str, broker: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    kt = [f"kt-{i:02d}" for i in range(25)]
    others = [f"skt-{i:02d}" for i in range(21)] + [f"lg-{i}" for i in range(4)]
    async with Simulator(broker.port) as sim, fleet_server(database, broker) as server:
        for device in kt + others:
            await sim.status(device, "online", f"{device}-1")
            isp = "KT" if device.startswith("kt") else device[:3].rstrip("-").upper()
            await sim.state(device, state(isp, "Seoul" if device < "kt-18" else "Incheon"))
        await until(server, lambda: sum(1 for b in server.model.boxes.values() if b.state)
                    == 50)
        # KT's wired network fails: 20 shops within seconds; 3 have no LTE, 3 have a KT SIM
        for i, device in enumerate(kt[:20]):
            lte = "down" if i < 3 else "up"
            await sim.state(device, state("KT", "Seoul" if device < "kt-18" else "Incheon",
                                          wired="down", lte=lte, same_carrier=3 <= i < 6))
        for device in others[-4:]:  # 4 LG shops down: too few for an incident
            await sim.state(device, state("LG", "Seoul", wired="down", lte="up"))
        await until(server, lambda: sum(1 for b in server.model.boxes.values()
                                        if b.wired_down) == 24)
        incidents = await get(server, "/api/incidents")
        assert len(incidents) == 1, incidents
        (incident,) = incidents
        assert (incident["isp"], incident["region"], incident["boxes_affected"],
                incident["boxes_without_failover"], incident["ended_at"]) == \
            ("KT", "Seoul", 20, 6, None)
        assert incident["title"].startswith("KT wired down at 20 shops (Seoul 18) since ")
        assert incident["title"].endswith("; 6 without failover")
        # the operator's CLI reads the same API
        # (in a thread: the server answers on this loop)
        assert await asyncio.to_thread(
            main, ["fleet", "incidents", "--json", "--server", server.url]) == 0
        assert json.loads(capsys.readouterr().out)[0]["boxes_affected"] == 20
        assert await asyncio.to_thread(
            main, ["fleet", "ls", "--server", server.url, "--where", "isp=LG"]) == 0
        out = capsys.readouterr().out
        assert out.count("lg-") == 4 and "kt-" not in out


def test_an_incident_closes_when_90_percent_are_back_and_stable() -> None:
    devices = [f"kt-{i}" for i in range(10)]
    model = online_model({"incident_stable_s": 60.0, "incident_window_s": 120.0},
                         [(d, "KT") for d in devices])
    for i, d in enumerate(devices):  # one a minute: the sliding window still groups them
        model.handle(f"storebox/{d}/state",
                     json.dumps(state("KT", "Seoul", wired="down", lte="up")).encode(),
                     T0 + timedelta(seconds=30 * i))
    assert len(model.incidents) == 1 and model.incidents[0].boxes_affected == 10
    back = T0 + timedelta(minutes=10)
    for d in devices[:8]:
        model.handle(f"storebox/{d}/state", json.dumps(state("KT", "Seoul")).encode(), back)
    model.tick(back + timedelta(minutes=5))
    assert model.open  # 8 of 10 back: not yet 90 %
    model.handle(f"storebox/{devices[8]}/state", json.dumps(state("KT", "Seoul")).encode(),
                 back + timedelta(minutes=5))
    model.tick(back + timedelta(minutes=5, seconds=30))
    assert model.open  # 9 of 10, but the ninth is not stable yet
    model.tick(back + timedelta(minutes=6, seconds=1))
    assert not model.open
    (incident,) = model.incidents_json()
    assert incident["ended_at"] is not None and "ended" in incident["title"]


async def test_an_open_incident_survives_a_restart_of_the_server(
        database: str, broker: Mosquitto) -> None:
    kt = [f"kt-{i:02d}" for i in range(6)]
    async with Simulator(broker.port) as sim:
        async with fleet_server(database, broker) as server:
            for device in kt:
                await sim.status(device, "online", f"{device}-1")
                await sim.state(device, state("KT", "Seoul"))
            for device in kt:
                await sim.state(device, state("KT", "Seoul", wired="down", lte="up"))
            await until(server, lambda: len(server.model.open) == 1)
            await until(server, lambda: server.db.pending == 0)
            (before,) = await get(server, "/api/incidents")
        async with fleet_server(database, broker, incident_stable_s=0.0) as server:
            (after,) = await get(server, "/api/incidents")
            assert after == before and after["ended_at"] is None
            assert server.model.open["KT"].id == before["id"]
            for device in kt:  # the shops come back: the same incident closes
                await sim.state(device, state("KT", "Seoul"))
            await until(server, lambda: not server.model.open)
            (closed,) = await get(server, "/api/incidents")
            assert closed["id"] == before["id"] and closed["ended_at"] is not None
            for device in kt[:5]:  # a new outage is a new incident, numbered after it
                await sim.state(device, state("KT", "Seoul", wired="down", lte="up"))
            await until(server, lambda: len(server.model.open) == 1)
            assert server.model.open["KT"].id == before["id"] + 1


async def test_two_ingest_workers_on_one_postgresql_no_duplicate_rows_no_lost_events(
        postgres_server: PostgresServer, broker: Mosquitto) -> None:
    """Scale-out: events shared between the workers, each event stored once; history and
    incidents written by the leading worker only."""
    dsn = postgres_server.create_database()
    boxes = [f"kt-{i:02d}" for i in range(10)]
    async with fleet_server(dsn, broker, shared_group="fleet", client_id="worker-a") as a, \
            fleet_server(dsn, broker, shared_group="fleet", client_id="worker-b") as b, \
            Simulator(broker.port) as sim:
        for device in boxes:
            await sim.status(device, "online", f"{device}-1")
            await sim.state(device, state("KT", "Seoul"))
        for seq in range(1, 21):
            for device in boxes:
                await sim.event(device, seq)
        for device in boxes[:6]:
            await sim.state(device, state("KT", "Seoul", wired="down", lte="up"))
        await until(a, lambda: a.model.events_stored + b.model.events_stored == 200
                    and len(a.model.open) == len(b.model.open) == 1)
        await until(a, lambda: a.db.pending == 0 and b.db.pending == 0)
        assert a.model.events_stored > 0 and b.model.events_stored > 0  # really shared
        assert a.db.count("events") == 200
        assert [a.db.leader, b.db.leader].count(True) == 1
        leader = a if a.db.leader else b
        assert a.db.count("incidents") == 1
        # one history row per box change the leader saw, none from the other worker
        assert a.db.count("state_history") == leader.db.history_written
        rows = leader.db.backend.execute("SELECT device_id, last_seq FROM boxes")
        assert sorted(rows) == [(device, 20) for device in boxes]


def test_most_of_the_fleet_lost_at_once_is_one_fleet_incident_not_one_per_isp() -> None:
    """The broker's (or the operator's) network fails: the Wills of most boxes arrive
    within seconds, across every ISP. One fleet-wide incident, and the shop incident one
    ISP had already opened from the first of those Wills is folded into it."""
    boxes = THREE_ISPS
    model = online_model({"incident_min_boxes": 3, "incident_min_share": 0.02,
                          "incident_stable_s": 0.0, "fleet_lost_share": 0.5}, boxes)
    for n, (device, _) in enumerate(boxes[:20]):  # KT's ten first, then SKT's: 20 of 30
        model.handle(f"storebox/{device}/status",
                     status_payload("offline", f"{device}-1", T0),
                     T0 + timedelta(seconds=n))
    fleet = [i for i in model.incidents if i.kind == "fleet_unreachable"]
    assert len(fleet) == 1 and list(model.open) == [""], model.incidents_json()
    assert fleet[0].boxes_affected >= 15
    assert fleet[0].title.startswith("Fleet unreachable: ")
    folded = [i for i in model.incidents if i.folded_into is not None]
    assert [i.isp for i in folded] == ["KT", "SKT"]  # opened by their first Wills, folded
    assert all(i.ended_at is not None and i.folded_into == fleet[0].id for i in folded)
    assert not any(i.kind == "wired_down" and i.ended_at is None for i in model.incidents)
    back = T0 + timedelta(minutes=5)
    for device, _ in boxes[:20]:
        model.handle(f"storebox/{device}/status", status_payload("online", f"{device}-2", back),
                     back)
    model.tick(back + timedelta(seconds=1))
    assert not model.open and fleet[0].ended_at is not None


def test_a_tenth_of_the_fleet_offline_stays_a_shop_incident() -> None:
    boxes = THREE_ISPS
    model = online_model({"incident_min_boxes": 3, "fleet_lost_share": 0.5}, boxes)
    for device, _ in boxes[:3]:  # three KT shops lose power or their line
        model.handle(f"storebox/{device}/status", status_payload("offline", f"{device}-1", T0),
                     T0)
    assert [i.kind for i in model.incidents] == ["wired_down"]
    assert model.incidents[0].isp == "KT" and model.incidents[0].folded_into is None


def test_one_isps_shops_offline_together_are_that_isps_outage_even_when_most() -> None:
    """Two thirds of the fleet, but all on KT (and the drill's fleet of one): KT's."""
    boxes = [(f"kt-{i}", "KT") for i in range(10)] + [(f"skt-{i}", "SKT") for i in range(5)]
    model = online_model({"incident_min_boxes": 1, "fleet_lost_share": 0.5}, boxes)
    for device, _ in boxes[:10]:
        model.handle(f"storebox/{device}/status", status_payload("offline", f"{device}-1", T0),
                     T0)
    assert [(i.kind, i.isp, i.boxes_affected) for i in model.incidents] == [
        ("wired_down", "KT", 10)]
