"""The operator's views of one shop and of one incident (docs/cli.md): `GET
/api/boxes/<id>`, its timeline, an incident's claim report from the boxes' `outage` events,
and the CLI over them (`fleet show`, `fleet export`, `fleet incidents --claim`, `fleet
watch`), against a real mosquitto and both databases."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from firmware.cli.fleet_watch import Board, sse_events
from firmware.cli.main import main
from tests.fleet.test_fleet_server import Simulator, fleet_server, get, state, until
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path) as b:
        yield b


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in a thread (the server answers on this loop): exit code, stdout, stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def outage(ident: int, started: datetime, minutes: float, payments: int, amount: int,
           uplink: str = "wired") -> dict[str, Any]:
    """An `outage` event as the box's fleet agent sends a ledger row (docs/cli.md)."""
    ended = started + timedelta(minutes=minutes)
    return {"kind": "outage", "severity": "info", "at": ended.isoformat(), "id": ident,
            "uplink": uplink, "isp": "KT", "started_at": started.isoformat(),
            "ended_at": ended.isoformat(), "duration_s": minutes * 60,
            "detected_by": "carrier", "cause_hint": "carrier lost",
            "payments_offline": payments, "payments_offline_amount": amount,
            "message": f"{uplink} outage of {minutes * 60} s ended"}


async def publish_event(sim: Simulator, device: str, seq: int, doc: dict[str, Any]) -> None:
    await sim.client.publish(f"storebox/{device}/events",
                             json.dumps({"seq": seq, "session": "b-1", **doc}), qos=1)


async def test_a_shops_page_its_timeline_and_the_export(
        database: str, broker: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    async with Simulator(broker.port) as sim, fleet_server(database, broker) as server:
        for i in range(4):
            await sim.status(f"shop-{i}", "online", f"boot-{i}-1")
            await sim.state(f"shop-{i}", state("KT" if i < 3 else "SKT", "Seoul"))
        await until(server, lambda: sum(1 for b in server.model.boxes.values() if b.state) == 4)
        for _ in range(3):  # the periodic state, unchanged: one entry in the timeline
            await sim.state("shop-1", state("KT", "Seoul"))
        await sim.state("shop-1", state("KT", "Seoul", wired="down", lte="up"))
        await until(server, lambda: server.model.boxes["shop-1"].wired_down)
        now = datetime.now(UTC).isoformat()
        await publish_event(sim, "shop-1", 1, {"kind": "failover", "at": now,
                                               "message": "wired down: carrier lost; on LTE"})
        await until(server, lambda: server.model.boxes["shop-1"].last_seq == 1)

        box = await get(server, "/api/boxes/shop-1")
        assert (box["device_id"], box["active"], box["wired"]["state"], box["isp"]) == \
            ("shop-1", "lte", "down", "KT")
        assert box["state"]["site"] == {"isp": "KT", "region": "Seoul"}
        assert box["incidents"] == []
        entries = await get(server, "/api/boxes/shop-1/timeline")
        assert [e["what"] for e in entries] == ["event", "state", "state", "state"], entries
        assert entries[0]["what"] == "event" and entries[0]["kind"] == "failover"
        assert entries[0]["text"] == "wired down: carrier lost; on LTE"
        assert entries[1]["text"] == "on lte, wired down, LTE up"
        assert entries[2]["text"] == "on wired, wired up, LTE standby"
        assert entries[3]["text"] == "online; no state received yet"
        async with aiohttp.ClientSession() as http:
            for path, status in (("/api/boxes/nope", 404), ("/api/boxes/nope/timeline", 404),
                                 ("/api/boxes/shop-1/timeline?limit=x", 400)):
                async with http.get(server.url + path) as r:
                    assert r.status == status, path

        code, out, _ = await cli(capsys, "fleet", "show", "shop-1", "--server", server.url)
        assert code == 0
        assert "shop-1" in out and "active uplink   lte" in out and "wired           down" in out
        assert "failover     wired down: carrier lost; on LTE" in out
        code, out, _ = await cli(capsys, "fleet", "show", "shop-1", "--json", "--limit", "1",
                              "--server", server.url)
        assert code == 0 and len(json.loads(out)["timeline"]) == 1
        code, _, err = await cli(capsys, "fleet", "show", "nope", "--server", server.url)
        assert code == 1 and "no box 'nope'" in err

        code, out, _ = await cli(capsys, "fleet", "export", "--where", "isp=KT",
                              "--server", server.url)
        rows = list(csv.DictReader(io.StringIO(out)))
        assert code == 0 and [r["device_id"] for r in rows] == ["shop-0", "shop-1", "shop-2"]
        assert list(rows[0])[:6] == ["device_id", "presence", "online", "active",
                                     "wired.state", "lte.state"]
        assert rows[1]["wired.state"] == "down" and rows[1]["modem.operator"] == "SKT"
        code, out, _ = await cli(capsys, "fleet", "export", "--json", "--server", server.url)
        assert code == 0 and len(json.loads(out)) == 4


async def test_an_incidents_claim_report_from_the_boxes_outage_ledgers(
        database: str, broker: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    kt = [f"kt-{i}" for i in range(6)]
    async with Simulator(broker.port) as sim:
        async with fleet_server(database, broker, incident_stable_s=0.0) as server:
            for device in kt:
                await sim.status(device, "online", f"{device}-1")
                await sim.state(device, state("KT", "Seoul" if device != "kt-5" else "Busan"))
            await until(server, lambda: sum(1 for b in server.model.boxes.values()
                                            if b.state) == 6)
            for device in kt:
                await sim.state(device, state("KT", "Seoul", wired="down", lte="up"))
            await until(server, lambda: len(server.model.open) == 1)
            iid = server.model.open["KT"].id
            down = server.model.open["KT"].started_at
            # while the shops are down no ledger row has come: the report says so
            code, out, _ = await cli(capsys, "fleet", "incidents", "--claim", str(iid),
                                  "--server", server.url)
            rows = list(csv.DictReader(io.StringIO(out)))
            assert code == 0 and len(rows) == 6
            assert {r["evidence"] for r in rows} == \
                {"still down: the ledger row comes when the line is back"}
            # the lines come back; the boxes send their ledger rows as `outage` events
            for i, device in enumerate(kt[:5]):
                await publish_event(sim, device, 1, outage(7, down - timedelta(seconds=5),
                                                           10 + i, i, 1000 * i))
            await publish_event(sim, "kt-0", 2, outage(7, down - timedelta(seconds=5), 10,
                                                       0, 0))  # resent after a restart
            await publish_event(sim, "kt-1", 2, outage(8, down, 3, 2, 500, uplink="lte"))
            await publish_event(sim, "kt-2", 2, outage(6, down - timedelta(days=2), 30, 9,
                                                       9000))  # an older outage
            for device in kt:
                await sim.state(device, state("KT", "Seoul"))
            await until(server, lambda: not server.model.open
                        and server.model.events_stored == 8)

            claim = await get(server, f"/api/incidents/{iid}/claim")
            assert claim["incident"]["id"] == iid and claim["incident"]["ended_at"]
            assert claim["totals"] == {"shops": 6, "shops_with_ledger": 5,
                                       "outage_minutes": 60.0, "payments_offline": 10,
                                       "payments_offline_amount": 10000}
            by_device = {r["device_id"]: r for r in claim["rows"]}
            assert (by_device["kt-2"]["outage_minutes"], by_device["kt-2"]["payments_offline"],
                    by_device["kt-2"]["outages"]) == (12.0, 2, 1)
            assert by_device["kt-5"]["evidence"] == "no ledger row received yet"
            assert by_device["kt-5"]["back_at"] is not None
        async with fleet_server(database, broker) as server:  # an ended incident, restarted
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{server.url}/api/incidents/{iid}/claim.csv") as r:
                assert r.status == 200 and r.content_type == "text/csv"
                assert f"incident-{iid}-claim.csv" in r.headers["Content-Disposition"]
                rows = list(csv.DictReader(io.StringIO(await r.text())))
            assert [r["device_id"] for r in rows] == kt
            assert [r["outage_minutes"] for r in rows] == \
                ["10.0", "11.0", "12.0", "13.0", "14.0", "0.0"]
            assert [r["payments_offline_amount"] for r in rows] == \
                ["0", "1000", "2000", "3000", "4000", "0"]
            code, out, _ = await cli(capsys, "fleet", "incidents", "--claim", str(iid), "--json",
                                  "--server", server.url)
            assert code == 0 and json.loads(out)["totals"]["outage_minutes"] == 60.0
            code, _, err = await cli(capsys, "fleet", "incidents", "--claim", "99",
                                     "--server", server.url)
            assert code == 1 and "no incident 99" in err


async def test_fleet_watch_draws_the_fleet_live_from_the_stream(
        tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    async with Simulator(broker.port) as sim, \
            fleet_server(str(tmp_path / "fleet.sqlite3"), broker) as server:
        for i in range(3):
            await sim.status(f"shop-{i}", "online", f"boot-{i}-1")
            await sim.state(f"shop-{i}", state("KT", "Seoul"))
        await until(server, lambda: sum(1 for b in server.model.boxes.values() if b.state) == 3)
        code, out, _ = await cli(capsys, "fleet", "watch", "--once", "--server", server.url)
        assert code == 0 and "3 shops: 3 online, 0 stale, 0 offline" in out
        assert "no open incident" in out and out.count("shop-") == 3

        watcher = asyncio.create_task(cli(capsys, "fleet", "watch", "--count", "1",
                                          "--where", "wired.state=down",
                                          "--server", server.url))
        await until(server, lambda: len(server.streams) == 1)
        await sim.state("shop-2", state("KT", "Seoul", wired="down", lte="up"))
        code, out, _ = await asyncio.wait_for(watcher, 10)
        last = out.rsplit("storebox fleet ", 1)[1]  # the last screen drawn
        assert code == 0 and "wired down at 1" in last
        assert "shop-2" in last and "shop-0" not in last  # --where narrows the table only
        code, _, err = await cli(capsys, "fleet", "watch", "--once",
                                 "--server", "http://127.0.0.1:9")
        assert code == 1 and "127.0.0.1:9" in err


async def test_the_watch_screen_from_a_made_up_stream() -> None:
    async def stream() -> AsyncIterator[bytes]:
        box = {"device_id": "kt-1", "presence": "online", "active": "lte",
               "wired": {"state": "down"}, "lte": {"state": "up"}, "queued": 2, "isp": "KT",
               "region": "Seoul", "last_seen": "2021-10-25T11:20:13+00:00"}
        incident = {"id": 3, "title": "KT wired down at 5 shops since 11:20:13",
                    "ended_at": None}
        for line in (": storebox fleet", "", "event: box",
                     f"data: {json.dumps({'type': 'box', 'box': box})}", "",
                     "event: event", 'data: {"type": "event", "device_id": "kt-1"}', "",
                     "event: incident", "data: {broken", "",
                     "event: incident",
                     f"data: {json.dumps({'type': 'incident', 'incident': incident})}", ""):
            yield (line + "\n").encode()

    board = Board(keep=lambda box: box.get("isp") == "KT")
    board.load([{"device_id": f"skt-{i}", "presence": "online", "active": "wired",
                 "wired": {"state": "up"}, "isp": "SKT"} for i in range(3)]
               + [{"device_id": "kt-0", "presence": "offline", "isp": "KT"}], [])
    changed = [board.apply(kind, data) async for kind, data in sse_events(stream())]
    assert changed == [True, False, True]
    screen = board.render(datetime(2021, 10, 25, 11, 21, tzinfo=UTC), width=90, height=8)
    lines = screen.splitlines()
    assert lines[0] == ("storebox fleet  11:21:00 UTC  5 shops: 4 online, 0 stale, "
                        "1 offline; wired down at 1")
    assert lines[1] == "! #3 KT wired down at 5 shops since 11:20:13"
    # the most urgent first (gone, then wired down), the --where filter applied
    assert [line.split()[0] for line in lines[4:]] == ["kt-0", "kt-1"]
    assert all(len(line) <= 90 for line in lines)
    small = board.render(datetime(2021, 10, 25, 11, 21, tzinfo=UTC), height=5).splitlines()
    assert small[-1] == "… and 1 more (narrow with --where)"
