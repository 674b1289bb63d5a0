"""Fleet revision 2 on the box (docs/mqtt.md), against a real mosquitto: the `status`
payload's session (birth and Will of one connection), `seq` kept across restarts, events
kept on disk while the broker is away (and across a restart), `config_version` and
`site` in the state."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from firmware.components.context import BoxContext
from firmware.components.fleet import build_fleet
from firmware.config import load_config_text
from firmware.fleet.store import FleetStore, boot_id
from firmware.state import BoxState
from firmware.tokens import TokenStore
from tests.firmware.test_fleet import FAST, Box
from tests.support.mosquitto import Mosquitto, Operator

DEVICE = "store-r2"
T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path) as b:
        yield b


@contextlib.asynccontextmanager
async def box_at(tmp: Path, url: str, extra: str = "") -> AsyncIterator[Box]:
    """The fleet agent of a box whose state dir is `tmp/state` (kept between boxes: a
    second `box_at` on the same `tmp` is the same box after a restart)."""
    (tmp / "state").mkdir(exist_ok=True)
    config = load_config_text(f"""\
[device]
id = "{DEVICE}"
state_dir = "{tmp / 'state'}"
region = "Seoul"
[wired]
isp = "KT"
[payments]
gateway_url = "http://127.0.0.1:9"
allow_insecure_gateway = true
[fleet]
mqtt_url = "{url}"
state_min_interval_s = 0.2
{extra}
""")
    state = BoxState(DEVICE, "9.9.9", wall=lambda: T0)
    context = BoxContext(config, state, TokenStore(str(tmp / "no-tokens")), web.Application())
    agent = await build_fleet(context)
    assert agent is not None
    agent.backoff = FAST
    box = Box(state, context, agent)
    box.start()
    try:
        yield box
    finally:
        await box.stop()
        for closer in reversed(context.closers):
            await closer()


async def settled(check: Any, timeout: float = 5.0) -> None:
    """Yield to the loop until `check()` (the agent collects events in a task of its own;
    its store is not part of the box state, so nothing wakes a state watcher)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0)


async def events(op: Operator, count: int, after: int = 0) -> list[dict[str, Any]]:
    """The next `count` distinct events with a seq beyond `after` (QoS 1 duplicates, same
    seq, left out, as a consumer does)."""
    seen: dict[int, dict[str, Any]] = {}
    while len(seen) < count:
        event = (await op.next("events", timeout=10)).json()
        if event["seq"] > after:
            seen.setdefault(event["seq"], event)
    return list(seen.values())


async def test_birth_and_will_of_one_connection_carry_its_session(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, box_at(tmp_path, broker.url) as box:
        birth = (await op.next("status")).json()
        assert birth["status"] == "online"
        assert birth["session"] == f"{boot_id()}-1"
        assert datetime.fromisoformat(birth["since"]) == T0
        assert (await op.next("state")).json()["fleet"]["link"] in ("up", "connecting")
        client = box.agent.client
        assert client is not None
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the link dies: the Will
        will = (await op.next("status")).json()
        assert (will["status"], will["session"]) == ("offline", birth["session"])
        again = (await op.next("status")).json()
        assert (again["status"], again["session"]) == ("online", f"{boot_id()}-2")
        await box.link("up")
    # a restart of the box in the same boot: a new session, never one seen before
    async with Operator(broker.port, DEVICE) as op, box_at(tmp_path, broker.url):
        retained = await op.next("status", where=lambda m: m.status == "online")
        assert retained.session == f"{boot_id()}-3"


async def test_seq_and_session_on_every_event_and_seq_survives_a_restart(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op:
        async with box_at(tmp_path, broker.url) as box:
            await box.link("up")
            for i in range(3):
                box.state.events.emit("fault", f"fault {i}", n=i)
            first = await events(op, 3)
        assert [e["seq"] for e in first] == [1, 2, 3]
        assert {e["session"] for e in first} == {f"{boot_id()}-1"}
        async with box_at(tmp_path, broker.url) as box:
            await box.link("up")
            box.state.events.emit("fault", "after the restart", n=3)
            # (seq 3 may come again first: its PUBACK can arrive after the first box's stop,
            # so it waited in the outbox and was sent again; a consumer drops it by its seq)
            (after,) = await events(op, 1, after=3)
        assert after["seq"] == 4 and after["n"] == 3
        assert after["session"] == f"{boot_id()}-2"


async def test_events_wait_on_disk_for_the_broker_across_a_restart_and_arrive_in_order(
        tmp_path: Path, broker: Mosquitto) -> None:
    op = Operator(broker.port, DEVICE, client_id="fleet-backend")
    async with op:
        async with box_at(tmp_path, broker.url) as box:
            await box.link("up")
            box.state.events.emit("fault", "before", n=0)
            await events(op, 1)
            await settled(lambda: box.agent.store.count() == 0)  # acknowledged
            broker.stop()
            await box.link("down")
            for i in range(1, 6):
                box.state.events.emit("queue_drained", f"during the outage {i}", n=i)
            await settled(lambda: box.agent.store.count() == 5)
        # the box restarts while the broker is still away: the events are on disk
        store = FleetStore(tmp_path / "state" / "fleet.sqlite3")
        assert [p.doc["n"] for p in store.waiting()] == [1, 2, 3, 4, 5]
        store.close()
        broker.start()
        async with box_at(tmp_path, broker.url) as box:
            await op.reconnect()
            got = await events(op, 5, after=1)  # seq 1 may come again: its PUBACK raced
            await settled(lambda: box.agent.store.count() == 0)
    assert [e["n"] for e in got] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in got] == [2, 3, 4, 5, 6]
    assert all(e["delayed"] is True for e in got)


async def test_the_disk_outbox_is_bounded_and_counts_what_it_dropped(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE, client_id="fleet-backend") as op, \
            box_at(tmp_path, broker.url, "event_buffer = 3") as box:
        await box.link("up")
        broker.stop()
        await box.link("down")
        for i in range(7):
            box.state.events.emit("fault", f"fault {i}", n=i)
        await settled(lambda: box.agent.dropped_events == 4)
        broker.start()
        await op.reconnect()
        got = await events(op, 3)
    assert [e["n"] for e in got] == [4, 5, 6]
    assert got[0]["dropped_before"] == 4 and "dropped_before" not in got[1]


async def test_state_carries_config_version_and_site(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, box_at(tmp_path, broker.url):
        state = (await op.next("state")).json()
    assert state["site"] == {"isp": "KT", "region": "Seoul"}
    assert isinstance(state["config_version"], str) and len(state["config_version"]) == 16


async def test_an_ended_outage_in_the_state_is_one_outage_event(
        tmp_path: Path, broker: Mosquitto) -> None:
    row = {"id": 1, "uplink": "wired", "isp": "KT", "started_at": "2021-10-25T11:20:00+00:00",
           "ended_at": "2021-10-25T11:25:00+00:00", "duration_s": 300.0,
           "detected_by": "probes", "cause_hint": "no answer", "payments_offline": 2,
           "payments_offline_amount": 25000}
    async with Operator(broker.port, DEVICE) as op:
        async with box_at(tmp_path, broker.url) as box:
            await box.link("up")
            box.state.update(box.state.outages, ended=[row], total=1)
            (event,) = await events(op, 1)
            box.state.touch()  # another change: not sent again
        assert event["kind"] == "outage" and event["payments_offline_amount"] == 25000
        async with box_at(tmp_path, broker.url) as box:  # after a restart: not again
            box.state.update(box.state.outages, ended=[row], total=1)
            await box.link("up")
            box.state.events.emit("fault", "next")
            (following,) = await events(op, 1)
        assert following["kind"] == "fault"
