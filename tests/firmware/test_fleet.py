"""The fleet agent against a real mosquitto, observed by an aiomqtt client as the operator.

The agent runs in-process (built by `build_fleet` from a real config and box context);
each test starts its own broker on a free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.components.context import BoxContext
from firmware.components.fleet import build_fleet
from firmware.config import Config, load_config_text
from firmware.fleet.agent import FleetAgent
from firmware.state import BoxState
from firmware.status import status_document
from firmware.supervisor import Backoff
from firmware.tokens import TokenStore
from tests.support.mosquitto import Mosquitto, Operator, make_tls, sign_command

T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)
DEVICE = "store-t"
PAN = "4111111111111111"
FAST = Backoff(initial_s=0.05, cap_s=0.3, healthy_after_s=60.0)


def sign(key: Ed25519PrivateKey, name: str, command_id: str, args: dict[str, Any],
         expires_at: str, device_id: str = DEVICE) -> str:
    return sign_command(key, device_id, name, command_id, args, expires_at)


def signed(key: Ed25519PrivateKey, name: str, command_id: str,
           expires_at: datetime = T0 + timedelta(minutes=5),
           args: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    args = args or {}
    when = expires_at.isoformat()
    body = {"id": command_id, "args": args, "expires_at": when,
            "sig": sign(key, name, command_id, args, when)}
    body.update(overrides)
    return body


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Box:
    state: BoxState
    context: BoxContext
    agent: FleetAgent
    drains: list[int] = field(default_factory=list)
    reloads: list[int] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for the box state to satisfy `check` (woken by its changes)."""
        async with asyncio.timeout(timeout):
            seen = self.state.revision
            while not check():
                seen = await self.state.wait_changed(seen)

    async def link(self, link: str, timeout: float = 5.0) -> None:
        await self.until(lambda: self.state.fleet.link == link, timeout)


def box_config(tmp: Path, url: str, fleet: str = "") -> Config:
    (tmp / "state").mkdir(exist_ok=True)
    return load_config_text(f"""\
[device]
id = "{DEVICE}"
state_dir = "{tmp / 'state'}"
[payments]
gateway_url = "http://127.0.0.1:9"
allow_insecure_gateway = true
[fleet]
mqtt_url = "{url}"
{fleet}
{"" if "state_min_interval_s" in fleet else "state_min_interval_s = 0.2"}
""")


@contextlib.asynccontextmanager
async def fleet_box(tmp: Path, url: str, fleet: str = "",
                    wall: Callable[[], datetime] = lambda: T0,
                    start: bool = True, fast: bool = True) -> AsyncIterator[Box]:
    config = box_config(tmp, url, fleet)
    state = BoxState(DEVICE, "9.9.9", wall=wall)
    (tmp / "tokens").write_text("token-for-tests\n")
    (tmp / "tokens").chmod(0o600)
    context = BoxContext(config, state, TokenStore(str(tmp / "tokens")), web.Application())
    drains: list[int] = []
    reloads: list[int] = []

    def reload() -> dict[str, Any]:
        reloads.append(1)
        return {"ok": True, "tokens": 0, "restart_needed": []}

    agent = await build_fleet(context, drain_queue=lambda: drains.append(1),
                              reload_config=reload)
    assert agent is not None
    if fast:
        agent.backoff = FAST
    box = Box(state, context, agent, drains, reloads)
    if start:
        box.start()
    try:
        yield box
    finally:
        await box.stop()


async def distinct_events(op: Operator, count: int, kind: str) -> list[dict[str, Any]]:
    """The next `count` events of `kind`, in arrival order, QoS 1 duplicates (same seq,
    e.g. redelivered to a persistent session after the broker restarted) left out."""
    seen: dict[int, dict[str, Any]] = {}
    while len(seen) < count:
        event = (await op.next("events", timeout=10, where=lambda m: m.json()["kind"] == kind)
                 ).json()
        seen.setdefault(event["seq"], event)
    return list(seen.values())


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path) as b:
        yield b


# ---------------------------------------------------------------------- status and state


async def test_birth_online_and_state_retained_as_the_status_view(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        assert box.state.fleet.broker == broker.url
        # the state after the birth: the published document carries link "up"
        async with Operator(broker.port, DEVICE) as late:  # subscribes after the fact
            status = await late.next("status")
            assert status.status == "online" and status.retain
            state = await late.next("state")
            assert state.retain
            doc = state.json()
            assert doc.pop("site") == {"isp": "", "region": ""}
            assert len(doc.pop("config_version")) == 16
            assert doc == status_document(box.state)
            assert state.json()["fleet"]["link"] == "up"
            assert state.json()["device_id"] == DEVICE


async def test_last_will_offline_when_the_connection_dies_then_online_again(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await op.next("status", where=lambda m: m.status == "online")
        client = box.agent.client
        assert client is not None
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the link dies: no DISCONNECT, no goodbye
        will = await op.next("status")
        assert will.status == "offline"
        # the agent reconnects by itself, after its backoff (more on a loaded machine)
        again = await op.next("status", 30.0)
        assert again.status == "online"
        await box.until(lambda: box.agent.connections >= 2, 30.0)


async def test_offline_on_clean_stop(tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await op.next("status", where=lambda m: m.status == "online")
        started = time.monotonic()
        await box.stop()
        assert time.monotonic() - started < 2.0
        assert (await op.next("status")).status == "offline"
    # a clean DISCONNECT (the broker drops the Will): `offline` came from the agent itself
    broker.wait_log("Client storebox-store-t disconnected.")
    async with Operator(broker.port, DEVICE) as late:
        retained = await late.next("status")
        assert (retained.status, retained.retain) == ("offline", True)


async def test_a_state_change_is_published_within_the_min_interval(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, \
            fleet_box(tmp_path, broker.url, "state_every_s = 60.0") as box:
        await op.next("state", where=lambda m: m.json()["fleet"]["link"] == "up")
        for queued in (1, 2):
            changed = time.monotonic()
            box.state.update(box.state.payments, queued=queued)
            message = await op.next("state",
                                    where=lambda m, q=queued: m.json()["payments"]["queued"] == q)
            assert message.at - changed < 0.2 + 0.3  # min interval 0.2 s, plus delivery


async def test_a_burst_of_changes_is_coalesced(tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, \
            fleet_box(tmp_path, broker.url, "state_min_interval_s = 0.5") as box:
        await op.next("state", where=lambda m: m.json()["fleet"]["link"] == "up")
        before = len([m for m in op.received if m.topic == "state"])
        started = time.monotonic()
        for i in range(1, 101):
            box.state.update(box.state.payments, queued=i)
            await asyncio.sleep(0.002)  # a burst spread over ~0.2 s, the publisher runs
        await op.next("state", where=lambda m: m.json()["payments"]["queued"] == 100)
        states = [m for m in op.received if m.topic == "state"][before:]
        assert 1 <= len(states) <= 3, [m.json()["payments"]["queued"] for m in states]
        gaps = [b.at - a.at for a, b in itertools.pairwise(states)]
        assert all(gap > 0.4 for gap in gaps), gaps
        assert time.monotonic() - started < 2.0
        await op.nothing("state", within=0.7)  # nothing more to say


async def test_state_is_republished_without_changes(tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, \
            fleet_box(tmp_path, broker.url, "state_every_s = 0.3"):
        first = await op.next("state")
        second = await op.next("state", timeout=2.0)
        third = await op.next("state", timeout=2.0)
        assert 0.25 < second.at - first.at < 1.0
        assert third.json() == second.json()


# ---------------------------------------------------------------------- events


async def test_fleet_events_are_published_in_order(tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        events = box.state.events
        events.emit("failover", "wired -> lte: blackhole", severity="warning",
                    from_uplink="wired", to_uplink="lte")
        events.emit("component_restarted", "not for the fleet")
        events.emit("fault", "route control: boom", severity="error", reason="route_control")
        first = (await op.next("events")).json()
        second = (await op.next("events")).json()
        assert (first["kind"], first["to_uplink"], first["severity"]) == (
            "failover", "lte", "warning")
        assert first["seq"] < second["seq"]
        assert second["kind"] == "fault" and second["reason"] == "route_control"
        assert "delayed" not in first
        assert first["at"] == T0.isoformat()


async def test_events_during_a_broker_outage_arrive_after_reconnect_in_order(
        tmp_path: Path, broker: Mosquitto) -> None:
    op = Operator(broker.port, DEVICE, client_id="fleet-backend")  # a persistent session
    async with op, fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        box.state.events.emit("failover", "before the outage")
        assert (await op.next("events")).json()["message"] == "before the outage"
        broker.stop()
        await box.link("down")
        assert box.state.fleet.last_error
        for i in range(5):
            box.state.events.emit("queue_drained", f"during the outage {i}", n=i)
        box.state.update(box.state.payments, queued=7)
        broker.start()
        await op.reconnect()  # the back end comes back too; its session kept its queue
        got = await distinct_events(op, 5, kind="queue_drained")
        assert [e["n"] for e in got] == [0, 1, 2, 3, 4]
        assert all(e["delayed"] is True for e in got)
        await op.next("status", where=lambda m: m.status == "online")
        await op.next("state", where=lambda m: m.json()["payments"]["queued"] == 7)
        await box.link("up")


async def test_the_outage_buffer_is_bounded_and_says_what_it_dropped(
        tmp_path: Path, broker: Mosquitto) -> None:
    op = Operator(broker.port, DEVICE, client_id="fleet-backend")
    async with op, fleet_box(tmp_path, broker.url, "event_buffer = 3") as box:
        await box.link("up")
        broker.stop()
        await box.link("down")
        for i in range(5):
            box.state.events.emit("fault", f"fault {i}", n=i)
        broker.start()
        await op.reconnect()
        got = await distinct_events(op, 3, kind="fault")
        assert [e["n"] for e in got] == [2, 3, 4]
        assert got[0]["dropped_before"] == 2
        assert "dropped_before" not in got[1]
        assert box.agent.dropped_events == 2


async def test_events_emitted_before_the_agent_ran_are_published(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, \
            fleet_box(tmp_path, broker.url, start=False) as box:
        box.state.events.emit("fault", "no merchant key", reason="no_merchant_key")
        box.start()
        event = (await op.next("events")).json()
        assert event["reason"] == "no_merchant_key"


async def test_no_card_number_is_ever_published(tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        # a careless component: the PAN in an event's message and data (never done, but)
        box.state.events.emit("fault", f"gateway said: card {PAN} refused",
                              severity="error", card=PAN, spaced="4111 1111 1111 1111")
        box.state.update(box.state.uplink.wired, reason=f"probe {PAN}")
        event = (await op.next("events")).json()
        assert event["kind"] == "fault"
        await op.next("state", where=lambda m: "411111" in m.text)
        answer = await op.command("status", {"id": "s1"})
        assert answer["ok"]
    published = [m.payload for m in op.received]
    assert len(published) >= 5
    for payload in published:
        assert PAN.encode() not in payload
        assert b"4111 1111 1111 1111" not in payload
    assert b"411111\xe2\x80\xa61111" in b"".join(published)  # masked as the logs mask it


# ---------------------------------------------------------------------- the link


async def test_an_unreachable_broker_never_blocks_the_box(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        async with fleet_box(tmp_path, f"mqtt://127.0.0.1:{port}") as box:
            await box.link("down")
            assert "refused" in (box.state.fleet.last_error or "").lower()
            loop = asyncio.get_running_loop()
            before = loop.time()
            await asyncio.sleep(0.05)  # the loop keeps time while the agent retries
            assert loop.time() - before < 0.5
            assert box.state.fleet.link == "down"
            assert status_document(box.state)["fleet"]["link"] == "down"
            started = time.monotonic()
            await box.stop()
            assert time.monotonic() - started < 1.0


async def test_a_broker_that_never_answers_costs_no_sockets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import firmware.fleet.agent

    monkeypatch.setattr(firmware.fleet.agent, "REQUEST_TIMEOUT_S", 0.1)
    attempts: list[float] = []
    enough = asyncio.Event()

    async def sleep(seconds: float) -> None:  # counts the failed attempts
        attempts.append(seconds)
        if len(attempts) in (2, 12):
            enough.set()
        await asyncio.sleep(0)

    with socket.socket() as mute:  # accepts TCP (the kernel does), never says CONNACK
        mute.bind(("127.0.0.1", 0))
        mute.listen(100)
        url = f"mqtt://127.0.0.1:{mute.getsockname()[1]}"
        async with fleet_box(tmp_path, url, start=False) as box:
            box.agent._sleep = sleep
            box.start()
            async with asyncio.timeout(5):
                await enough.wait()
            enough.clear()
            fds = len(list(Path("/proc/self/fd").iterdir()))
            async with asyncio.timeout(10):
                await enough.wait()
            assert len(list(Path("/proc/self/fd").iterdir())) <= fds + 1
            assert box.state.fleet.link == "down"
            assert "timed out" in (box.state.fleet.last_error or "")


async def test_reconnects_back_off_exponentially_with_jitter_up_to_the_cap(
        tmp_path: Path) -> None:
    delays: list[float] = []
    enough = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the agent's clock, not the test's
        delays.append(seconds)
        if len(delays) == 12:
            enough.set()
        await asyncio.sleep(0)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"mqtt://127.0.0.1:{s.getsockname()[1]}"
        async with fleet_box(tmp_path, url, "reconnect_max_s = 8.0", start=False,
                             fast=False) as box:
            box.agent._sleep = sleep
            box.start()
            async with asyncio.timeout(5):
                await enough.wait()
    ceilings = [1.0, 2.0, 4.0, 8.0] + [8.0] * 8
    for delay, ceiling in zip(delays, ceilings, strict=False):
        assert ceiling / 2 <= delay <= ceiling, (delays, ceilings)
    assert len({round(d, 6) for d in delays[4:]}) > 1  # jittered, not in lockstep


async def test_username_and_password_file(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-pass-word"
    with Mosquitto(tmp_path, users={"store-t": secret, "ops": "ops-pass"}) as broker:
        password_file = tmp_path / "mqtt-password"
        password_file.write_text(secret + "\n")
        password_file.chmod(0o600)
        fleet = f'username = "store-t"\npassword_file = "{password_file}"\nallow_insecure = true'
        async with Operator(broker.port, DEVICE, username="ops", password="ops-pass") as op, \
                fleet_box(tmp_path, broker.url, fleet) as box:
            await box.link("up")
            assert (await op.next("status")).status == "online"
        wrong = tmp_path / "wrong-password"
        wrong.write_text("not-the-password\n")
        wrong.chmod(0o644)
        fleet = f'username = "store-t"\npassword_file = "{wrong}"\nallow_insecure = true'
        async with fleet_box(tmp_path, broker.url, fleet) as box:
            await box.link("down")
            assert "authori" in (box.state.fleet.last_error or "").lower()
        assert "readable by others" in caplog.text
        assert secret not in caplog.text and "not-the-password" not in caplog.text


async def test_mqtts_with_a_ca_file(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_tls(tmp_path / "other")  # a CA that did not sign the broker's certificate
    with Mosquitto(tmp_path, tls=tls) as broker:
        url = f"mqtts://localhost:{broker.port}"
        context = ssl.create_default_context(cafile=str(tls.ca))
        async with Operator(broker.port, DEVICE, tls_context=context, host="localhost") as op, \
                fleet_box(tmp_path, url, f'ca_file = "{tls.ca}"') as box:
            await box.link("up")
            assert box.state.fleet.broker == url
            assert (await op.next("status")).status == "online"
        async with fleet_box(tmp_path, url, f'ca_file = "{other.ca}"') as box:
            await box.link("down")
            assert "certificate" in (box.state.fleet.last_error or "").lower()
        async with fleet_box(tmp_path, url) as box:  # the system store knows not this CA
            await box.link("down")
            assert "certificate" in (box.state.fleet.last_error or "").lower()


# ---------------------------------------------------------------------- commands


@pytest.fixture
def operator_key(tmp_path: Path) -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "fleet-operator.pub"
    path.write_bytes(public_pem(key))
    return key, f'command_key_file = "{path}"'


async def test_ping_and_status_need_no_signature(tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        pong = await op.command("ping", {"id": "p-1", "args": {}})
        assert pong["ok"] is True and pong["name"] == "ping"
        assert pong["result"]["pong"] is True and pong["result"]["version"] == "9.9.9"
        status = await op.command("status", {"id": "s-1"})
        assert status["ok"] is True
        assert status["result"] == status_document(box.state)


async def test_a_signed_command_runs_end_to_end_and_an_unsigned_one_does_not(
        tmp_path: Path, broker: Mosquitto, operator_key: tuple[Ed25519PrivateKey, str]) -> None:
    """Through the broker, as the operator sends them; every way a command is refused is
    a table against `firmware.fleet.auth` (tests/firmware/test_fleet_auth.py)."""
    key, fleet = operator_key
    async with Operator(broker.port, DEVICE) as op, \
            fleet_box(tmp_path, broker.url, fleet) as box:
        await box.link("up")

        unsigned = await op.command("queue_drain", {"id": "d-1", "args": {}})
        assert unsigned["ok"] is False
        assert unsigned["error"]["code"] == "unauthorized"
        assert unsigned["error"]["field"] == "sig"
        assert box.drains == []

        good = signed(key, "queue_drain", "d-9")
        accepted = await op.command("queue_drain", good)
        assert accepted == {"id": "d-9", "name": "queue_drain", "ok": True,
                            "result": {"draining": True}}
        assert box.drains == [1]

        replayed = await op.command("queue_drain", good)
        assert replayed["error"]["code"] == "replayed"
        assert replayed["error"]["field"] == "id"
        assert box.drains == [1]

        reload = await op.command("config_reload", signed(key, "config_reload", "r-1"))
        assert reload["ok"] is True and box.reloads == [1]


async def test_used_ids_survive_a_restart(
        tmp_path: Path, broker: Mosquitto, operator_key: tuple[Ed25519PrivateKey, str]) -> None:
    key, fleet = operator_key
    good = signed(key, "queue_drain", "once")
    async with Operator(broker.port, DEVICE) as op:
        async with fleet_box(tmp_path, broker.url, fleet) as box:
            await box.link("up")
            assert (await op.command("queue_drain", good))["ok"] is True
        async with fleet_box(tmp_path, broker.url, fleet) as box:  # a new agent, same disk
            await box.link("up")
            assert (await op.command("queue_drain", good))["error"]["code"] == "replayed"
            assert box.drains == []


async def test_changing_commands_are_refused_without_a_key(
        tmp_path: Path, broker: Mosquitto, operator_key: tuple[Ed25519PrivateKey, str]) -> None:
    key, _ = operator_key
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        answer = await op.command("config_reload", signed(key, "config_reload", "r-1"))
        assert answer["error"]["code"] == "unauthorized"
        assert "command_key_file is empty" in answer["error"]["message"]
        assert box.reloads == []
        # SIGHUP (the daemon calls the reload hooks with the new config) installs a key
        key_file = tmp_path / "fleet-operator.pub"
        key_file.write_bytes(public_pem(key))
        new = box_config(tmp_path, broker.url, f'command_key_file = "{key_file}"')
        for hook in box.context.reload_hooks:
            hook(new)
        answer = await op.command("config_reload", signed(key, "config_reload", "r-2"))
        assert answer["ok"] is True and box.reloads == [1]


async def test_bad_commands_get_an_answer_naming_the_problem(
        tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="storebox.fleet")
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        bad_json = await op.command("ping", b"{not json", answer_id=None)
        assert bad_json["ok"] is False and bad_json["error"]["code"] == "bad_json"
        assert "not JSON" in bad_json["error"]["message"]

        no_id = await op.command("ping", {"args": {}}, answer_id=None)
        assert no_id["error"]["field"] == "id"
        assert "'id' is missing" in no_id["error"]["message"]

        bad_id = await op.command("ping", {"id": 42}, answer_id=42)
        assert bad_id["error"]["field"] == "id" and "42" in bad_id["error"]["message"]

        bad_args = await op.command("ping", {"id": "a-1", "args": [1, 2]})
        assert bad_args["error"]["field"] == "args"
        assert "[1, 2]" in bad_args["error"]["message"]

        extra_arg = await op.command("status", {"id": "a-2", "args": {"verbose": True}})
        assert extra_arg["error"]["field"] == "args.verbose"

        typo = await op.command("queue_drain", {"id": "a-3", "expire_at": "x"})
        assert typo["error"]["field"] == "expire_at"

        unknown = await op.command("reboot", {"id": "a-4"})
        assert unknown["error"]["code"] == "unknown_command"
        assert "ping" in unknown["error"]["message"]

        not_object = await op.command("ping", b"[1]", answer_id=None)
        assert not_object["error"]["code"] == "bad_request"

        await op.publish("cmd/ping", json.dumps({"id": "kept"}), retain=True)
        first = await op.next("cmd_result", where=lambda m: m.json()["id"] == "kept")
        assert first.json()["ok"] is True  # live delivery: not flagged retained
        client = box.agent.client
        assert client is not None
        client._client.socket().shutdown(socket.SHUT_RDWR)  # reconnect: now it is retained
        # the reconnect waits out the agent's backoff (seconds; more on a loaded machine)
        again = await op.next("cmd_result", 30.0, where=lambda m: m.json()["id"] == "kept")
        assert again.json()["error"]["code"] == "retained"
        await op.publish("cmd/ping", b"", retain=True)  # clear it

        assert (await op.command("ping", {"id": "still-alive"}))["ok"] is True
        await box.until(lambda: box.agent.connections == 2)
    assert "refused: bad_json" in caplog.text
    assert "refused: bad_request: field 'id' is missing" in caplog.text


# every parse error is a clean answer; the agent keeps its session (review of #8)
HOSTILE_COMMANDS: list[tuple[str, bytes, str]] = [
    ("10,000 nested arrays", b"[" * 10_000, "bad_json"),
    ("10,000 nested objects in args", b'{"id": "n", "args": ' + b'{"a": ' * 2_500, "bad_json"),
    ("nesting closed again", b'{"id": "n", "args": {"a": ' + b"[" * 500 + b"]" * 500 + b"}}",
     "bad_json"),
    ("a 5,000-digit integer", b'{"id": "n", "args": {"a": ' + b"9" * 5_000 + b"}}", "bad_json"),
    ("a 5,000-digit id", b'{"id": ' + b"1" * 5_000 + b"}", "bad_json"),
    ("a float that overflows", b'{"id": "n", "args": {"a": 1e999}}', "bad_json"),
    ("NaN", b'{"id": "n", "args": {"a": NaN}}', "bad_json"),
    ("-Infinity", b'{"id": "n", "expires_at": -Infinity}', "bad_json"),
    ("a lone surrogate id", b'{"id": "\\ud800"}', "bad_json"),
    ("a lone surrogate field name", b'{"id": "n", "\\udfff": 1}', "bad_json"),
    ("a lone surrogate argument name", b'{"id": "n", "args": {"\\ud83d": 1}}', "bad_json"),
    ("duplicate id", b'{"id": "a", "id": "b"}', "bad_json"),
    ("duplicate args", b'{"id": "n", "args": {}, "args": {"x": 1}}', "bad_json"),
    ("not UTF-8", b'{"id": "\xff\xfe"}', "bad_json"),
    ("16 KiB and one byte", b'{"id": "n", "args": {"a": "' + b"x" * 16_400 + b'"}}',
     "too_large"),
    ("1 MiB", b"[" * (1 << 20), "too_large"),
    ("empty", b"", "bad_json"),
    ("a bare string", b'"ping"', "bad_request"),
]


async def test_every_parse_error_is_answered_and_the_agent_keeps_running(
        tmp_path: Path, broker: Mosquitto) -> None:
    async with Operator(broker.port, DEVICE) as op, fleet_box(tmp_path, broker.url) as box:
        await box.link("up")
        for what, payload, code in HOSTILE_COMMANDS:
            for name in ("ping", "queue_drain"):
                answer = await op.command(name, payload, answer_id=None)
                assert answer["ok"] is False, what
                assert answer["error"]["code"] == code, (what, answer)
                assert answer["name"] == name
            # still the same session, still answering
            assert (await op.command("ping", {"id": f"alive-{what}"}))["ok"] is True, what
        long_name = "x" * 5_000
        answer = await op.command(long_name, {"id": "long"})
        assert answer["error"]["code"] == "unknown_command" and len(answer["name"]) <= 65
        assert box.agent.connections == 1
        assert box.drains == []
        assert box.task is not None and not box.task.done()
