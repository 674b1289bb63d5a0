"""The real daemon with its fleet agent, a real mosquitto, and the operator, all in the
test's network namespace."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.cli.status_view import render_status
from tests.support.box import API, VISA, payment_body, pinned_session
from tests.support.daemon import TOKEN, DaemonProcess, write_config
from tests.support.mosquitto import Mosquitto, Operator, sign_command
from tests.support.netns import inside

DEVICE = "store-test"
PORT = 1883


@dataclass
class FleetBox:
    daemon: DaemonProcess
    broker: Mosquitto
    operator: Operator
    key: Ed25519PrivateKey


@contextlib.asynccontextmanager
async def fleet_box(netns: str, tmp: Path) -> AsyncIterator[FleetBox]:
    """Broker, daemon and operator in `netns`; the test body runs there too (the thread
    pool that aiomqtt connects from is created inside it)."""
    key = Ed25519PrivateKey.generate()
    key_file = tmp / "fleet-operator.pub"
    key_file.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with inside(netns):
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(4, thread_name_prefix="in-netns"))
        broker = Mosquitto(tmp, port=PORT, netns=netns)
        broker.start()
        config = write_config(tmp, fleet={"mqtt_url": f"mqtt://127.0.0.1:{PORT}",
                                       "command_key_file": key_file,
                                       "state_min_interval_s": 0.2})
        daemon = DaemonProcess(netns, config)
        try:
            async with Operator(PORT, DEVICE, client_id="fleet-backend") as operator:
                await asyncio.to_thread(daemon.notify.wait_for, "READY", "1")
                yield FleetBox(daemon, broker, operator, key)
        finally:
            await asyncio.to_thread(daemon.stop)
            broker.stop()


async def test_the_daemon_reports_to_the_fleet_and_says_offline_on_sigterm(
        netns: str, tmp_path: Path) -> None:
    async with fleet_box(netns, tmp_path) as box:
        op = box.operator
        assert (await op.next("status", timeout=10)).status == "online"
        state = await op.next("state", timeout=10,
                              where=lambda m: m.json()["fleet"]["link"] == "up")
        doc = state.json()
        assert doc["device_id"] == DEVICE
        assert {"uplink", "modem", "payments", "leds"} <= doc.keys()
        assert doc["fleet"]["broker"] == f"mqtt://127.0.0.1:{PORT}"

        status = await asyncio.to_thread(box.daemon.get, "/v1/status")
        assert status["fleet"]["link"] == "up"
        assert status["components"]["fleet"]["state"] == "running"
        view = render_status(status)
        assert "Fleet" in view and f"up  mqtt://127.0.0.1:{PORT}" in view

        # a sale with a card number: the gateway is unreachable, so the box stands in
        async with pinned_session(box.daemon.pin) as session, session.post(
                f"{API}/v1/payments", data=json.dumps(payment_body(pan=VISA)),
                headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k-1"}) as r:
            answer = await r.json()
        assert answer["status"] == "approved_offline", answer
        offline = (await op.next("events", timeout=10,
                                 where=lambda m: m.json()["kind"] == "offline_mode")).json()
        assert offline["severity"] == "warning"
        await op.next("state", timeout=5, where=lambda m: m.json()["payments"]["queued"] == 1)

        expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        reload = await op.command("config_reload", {
            "id": "reload-1", "args": {}, "expires_at": expires,
            "sig": sign_command(box.key, DEVICE, "config_reload", "reload-1", {}, expires)})
        assert reload["ok"] is True, reload
        assert reload["result"]["tokens"] == 1
        drain = await op.command("queue_drain", {"id": "drain-1", "args": {}})
        assert drain["error"]["code"] == "unauthorized"

        code = await asyncio.to_thread(box.daemon.stop)
        assert code == 0, box.daemon.log()[-3000:]
        assert (await op.next("status", where=lambda m: m.status == "offline")).status
        box.broker.wait_log("Client storebox-store-test disconnected.")  # clean, not the Will

        published = [m.payload for m in op.received]
        assert VISA.encode() not in b"".join(published)
        assert "configuration reloaded" in box.daemon.log()


async def test_the_last_will_says_offline_when_the_daemon_is_killed(
        netns: str, tmp_path: Path) -> None:
    async with fleet_box(netns, tmp_path) as box:
        op = box.operator
        assert (await op.next("status", timeout=10)).status == "online"
        await asyncio.to_thread(box.daemon.kill)  # SIGKILL: no goodbye
        assert (await op.next("status")).status == "offline"
        async with Operator(PORT, DEVICE) as late:
            retained = await late.next("status")
            assert (retained.status, retained.retain) == ("offline", True)
