"""Fleet operations end to end: `fleet serve` with the operator's key, a real mosquitto and
real fleet agents (in-process, built by `build_fleet` from config files), on both
databases. Command jobs (signed per box, paced, tracked, aborted, recorded, audited) and
the desired-config document (signed, versioned, applied by the boxes, converged)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from firmware.cli.main import main
from firmware.components.context import BoxContext
from firmware.components.fleet import build_fleet
from firmware.config import load_config
from firmware.config.overlay import OVERLAY_FILE
from firmware.fleet.agent import FleetAgent
from firmware.fleet.topics import DESIRED_CONFIG
from firmware.fleet_server.config import from_dict
from firmware.fleet_server.server import FleetServer
from firmware.fleet_server.signing import new_key_files
from firmware.state import BoxState
from firmware.supervisor import Backoff
from firmware.tokens import TokenStore
from tests.fleet.test_fleet_server import Simulator
from tests.support.mosquitto import Mosquitto

FAST = Backoff(initial_s=0.05, cap_s=0.3, healthy_after_s=60.0)
#: A box says `offline` and disconnects in at most 3 s (agent.GOODBYE_TIMEOUT_S twice).
TEARDOWN_S = 30.0


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def operator_key(tmp_path: Path) -> tuple[Path, Path]:
    return new_key_files(str(tmp_path / "operator.key"))


@dataclass
class Box:
    device_id: str
    context: BoxContext
    agent: FleetAgent
    task: asyncio.Task[None]
    drains: list[int]

    @property
    def state_dir(self) -> Path:
        return Path(self.context.config.device.state_dir)


def box_toml(tmp: Path, device: str, url: str, public_key: Path | None) -> Path:
    state = tmp / device
    state.mkdir()
    path = tmp / f"{device}.toml"
    path.write_text(f"""\
[device]
id = "{device}"
state_dir = "{state}"
[payments]
gateway_url = "http://127.0.0.1:9"
allow_insecure_gateway = true
[fleet]
mqtt_url = "{url}"
command_key_file = "{public_key or ''}"
state_min_interval_s = 0.1
""")
    return path


async def start_box(tmp: Path, device: str, url: str, public_key: Path | None) -> Box:
    path = box_toml(tmp, device, url, public_key)
    config = load_config(path)
    state = BoxState(device, "9.9.9")
    tokens = tmp / f"{device}.tokens"
    tokens.write_text("token-for-tests\n")
    tokens.chmod(0o600)
    context = BoxContext(config, state, TokenStore(str(tokens)), web.Application())
    drains: list[int] = []

    def reload() -> dict[str, Any]:  # as the daemon's SIGHUP: the file, overlay and all
        context.config = load_config(path)
        return {"ok": True, "tokens": 1, "restart_needed": []}

    agent = await build_fleet(context, drain_queue=lambda: drains.append(1),
                              reload_config=reload)
    assert agent is not None
    agent.backoff = FAST
    return Box(device, context, agent, asyncio.create_task(agent.run()), drains)


@contextlib.asynccontextmanager
async def fleet(tmp: Path, database: str, broker: Mosquitto, key: tuple[Path, Path],
                signed: int, unsigned: int = 0) -> AsyncIterator[tuple[FleetServer, list[Box]]]:
    """`signed` boxes holding the operator's public key, `unsigned` boxes without it."""
    config = from_dict({"mqtt_url": broker.url, "listen": "127.0.0.1:0",
                        "database": database, "flush_s": 0.1,
                        "command_key_file": str(key[0]), "command_timeout_s": 5.0})
    server = FleetServer(config)
    await server.start()
    boxes = [await start_box(tmp, f"shop-{i:02d}", broker.url, key[1] if i < signed else None)
             for i in range(signed + unsigned)]
    try:
        await until(server, lambda: sum(b.online and bool(b.state)
                                        for b in server.model.boxes.values()) >= len(boxes))
        yield server, boxes
    finally:  # bounded: a stop that hangs fails here, naming itself (test_mqtt_cancel.py)
        for box in boxes:
            box.task.cancel()
        async with asyncio.timeout(TEARDOWN_S):
            await asyncio.gather(*(b.task for b in boxes), return_exceptions=True)
        async with asyncio.timeout(TEARDOWN_S):
            await server.stop()


async def until(server: FleetServer, check: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        await server.until(check)


async def api(server: FleetServer, method: str, path: str, body: Any = None,
              status: int = 200) -> Any:
    async with aiohttp.ClientSession() as session, \
            session.request(method, server.url + path, json=body) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def finished(server: FleetServer, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            job = await api(server, "GET", f"/api/jobs/{job_id}")
            if job["status"] != "running":
                return dict(job)
            await asyncio.sleep(0.1)


async def test_a_signed_job_reaches_every_box_and_is_recorded_and_audited(
        tmp_path: Path, database: str, broker: Mosquitto,
        operator_key: tuple[Path, Path]) -> None:
    async with fleet(tmp_path, database, broker, operator_key, signed=4, unsigned=1) as (
            server, boxes), Simulator(broker.port) as sim:
        await sim.status("ghost", "online", "ghost-1")  # online, but nothing answers
        await until(server, lambda: "ghost" in server.model.boxes)
        job = await api(server, "POST", "/api/jobs", {
            "name": "queue_drain", "rate": 50, "timeout_s": 1.5, "operator": "kim@noc"},
            status=202)
        assert (job["targets"], job["signed"], job["status"]) == (6, True, "running")
        done = await finished(server, job["id"])
        assert done["status"] == "done", done
        outcomes = {r["device_id"]: (r["outcome"], r["code"]) for r in done["results"]}
        assert outcomes == {**{f"shop-0{i}": ("ok", None) for i in range(4)},
                            "shop-04": ("refused", "unauthorized"),
                            "ghost": ("no_answer", None)}
        assert [len(b.drains) for b in boxes] == [1, 1, 1, 1, 0]
        assert done["counts"] | {} == {"ok": 4, "refused": 1, "error": 0, "no_answer": 1,
                                       "offline": 0, "not_sent": 0, "sent": 6, "waiting": 0}
        # in the database, and only the failures when asked
        stored = server.operations.store.job(job["id"])
        assert stored is not None and stored["counts"]["ok"] == 4
        assert len(server.operations.store.results(job["id"])) == 6
        failures = await api(server, "GET", f"/api/jobs/{job['id']}?results=failures")
        assert sorted(r["device_id"] for r in failures["results"]) == ["ghost", "shop-04"]
        listed = await api(server, "GET", "/api/jobs")
        assert [j["id"] for j in listed] == [job["id"]]
        audit = await api(server, "GET", "/api/audit")
        assert [(a["action"], a["actor"], a["subject"]) for a in reversed(audit)] == [
            ("job_created", "kim@noc", job["id"]), ("job_ended", "kim@noc", job["id"])]
        assert audit[0]["detail"]["counts"]["ok"] == 4
        # the same job again: new ids, so no box says `replayed`
        again = await api(server, "POST", "/api/jobs", {
            "name": "queue_drain", "where": ["isp="], "timeout_s": 1.0}, status=202)
        assert (await finished(server, again["id"]))["counts"]["ok"] == 4


async def test_a_job_aborts_when_failures_pass_the_percentage(
        tmp_path: Path, database: str, broker: Mosquitto,
        operator_key: tuple[Path, Path]) -> None:
    async with fleet(tmp_path, database, broker, operator_key, signed=1) as (server, _), \
            Simulator(broker.port) as sim:
        for i in range(20):
            await sim.status(f"ghost-{i:02d}", "online", f"g-{i}")
        await sim.status("gone", "offline", "g-x")
        await until(server, lambda: len(server.model.boxes) == 22)
        job = await api(server, "POST", "/api/jobs", {
            "name": "ping", "rate": 20, "timeout_s": 0.3, "min_sample": 3,
            "abort_after_failures_pct": 50}, status=202)
        done = await finished(server, job["id"])
        counts = done["counts"]
        assert done["status"] == "aborted", done
        assert "more than 50%" in done["reason"]
        assert counts["no_answer"] >= 3 and counts["not_sent"] > 0
        assert counts["sent"] + counts["not_sent"] + counts["offline"] == 22
        assert counts["sent"] < 15  # it stopped well before the end


async def test_bad_job_requests_are_refused_naming_the_field(
        tmp_path: Path, database: str, broker: Mosquitto,
        operator_key: tuple[Path, Path]) -> None:
    async with fleet(tmp_path, database, broker, operator_key, signed=1) as (server, _):
        for body, word in (({"name": "a/b"}, "name"), ({"name": "ping", "rate": 0}, "rate"),
                           ({"name": "ping", "where": ["isp"]}, "where"),
                           ({"name": "ping", "where": ["isp=none"]}, "no box matches"),
                           ({"name": "ping", "colour": 1}, "colour")):
            answer = await api(server, "POST", "/api/jobs", body, status=400)
            assert word in answer["error"]
        await api(server, "GET", "/api/jobs/j-none", status=404)


async def test_the_desired_config_converges_and_refusals_name_the_key(
        tmp_path: Path, database: str, broker: Mosquitto,
        operator_key: tuple[Path, Path]) -> None:
    async with fleet(tmp_path, database, broker, operator_key, signed=3, unsigned=1) as (
            server, boxes):
        doc = await api(server, "POST", "/api/config", {
            "settings": {"payments.offline_max_amount": 30000,
                         "probes.targets": ["tcp:192.0.2.1:443"]},
            "operator": "kim@noc"}, status=201)
        assert doc["version"] == 1 and doc["sig"]
        await until(server, lambda: sum(b.state.get("config_version") == "1"
                                        for b in server.model.boxes.values()) == 3)
        for box in boxes[:3]:
            assert box.context.config.payments.offline_max_amount == 30000
            assert (box.state_dir / OVERLAY_FILE).exists()
        assert boxes[3].context.config.payments.offline_max_amount == 50000
        await until(server, lambda: len(server.operations.desired.refusals) == 1)
        status = await api(server, "GET", "/api/config")
        assert {k: status[k] for k in ("version", "boxes", "converged", "pending")} == {
            "version": 1, "boxes": 4, "converged": 3, "pending": 0}
        assert [(r["device_id"], r["code"]) for r in status["refused"]] == [
            ("shop-03", "unauthorized")]
        # a key the fleet may not set: every box refuses, naming it, and keeps version 1
        await api(server, "POST", "/api/config", {
            "settings": {"fleet.mqtt_url": "mqtt://evil.example"}}, status=201)
        await until(server, lambda: sum(r.get("version") == 2 for r in
                                        server.operations.desired.refusals.values()) == 4)
        status = await api(server, "GET", "/api/config")
        refused = {r["device_id"]: r for r in status["refused"]}
        assert refused["shop-00"]["code"] == "not_remote"
        assert refused["shop-00"]["field"] == "settings.fleet.mqtt_url"
        assert "'fleet.mqtt_url'" in refused["shop-00"]["message"]
        # (by name: the server knows the boxes in the order their messages came)
        assert all(server.model.boxes[f"shop-{i:02d}"].state.get("config_version") == "1"
                   for i in range(3))
        # an old version published again changes nothing (versions only go up)
        async with Simulator(broker.port) as sim:
            await sim.client.publish(DESIRED_CONFIG, json.dumps(doc), qos=1, retain=True)
            await sim.client.publish("storebox/shop-00/cmd/ping", b'{"id": "p"}', qos=1)
        await asyncio.sleep(0.5)
        assert boxes[0].agent.desired is not None and boxes[0].agent.desired.applied == 1
        audit = await api(server, "GET", "/api/audit")
        assert [a["action"] for a in audit] == ["config_push", "config_push"]


async def test_a_forged_or_unknown_desired_config_is_refused_and_not_remembered(
        tmp_path: Path, database: str, broker: Mosquitto,
        operator_key: tuple[Path, Path]) -> None:
    async with fleet(tmp_path, database, broker, operator_key, signed=1) as (server, boxes):
        forged = {"version": 99, "issued_at": "2021-10-25T11:20:00+00:00",
                  "settings": {"payments.offline_max_amount": 1}, "sig": "A" * 88}
        async with Simulator(broker.port) as sim:
            await sim.client.publish(DESIRED_CONFIG, json.dumps(forged), qos=1, retain=True)
        await until(server, lambda: "shop-00" in server.operations.desired.refusals)
        assert server.operations.desired.refusals["shop-00"]["code"] == "bad_signature"
        # the operator's next version (1 < 99) is still applied
        await api(server, "POST", "/api/config", {
            "settings": {"payments.offline_max_count": 7}}, status=201)
        await until(server, lambda: server.model.boxes["shop-00"].state.get(
            "config_version") == "1")
        assert boxes[0].context.config.payments.offline_max_count == 7


async def test_cli_cmd_follows_the_job_and_config_push_and_status(
        tmp_path: Path, database: str, broker: Mosquitto, operator_key: tuple[Path, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    async with fleet(tmp_path, database, broker, operator_key, signed=2, unsigned=1) as (
            server, _):
        capsys.readouterr()
        code = await asyncio.to_thread(main, [
            "fleet", "cmd", "queue_drain", "--server", server.url, "--rate", "20/s",
            "--where", "presence=online", "--timeout", "3", "--operator", "lee@noc"])
        out = capsys.readouterr().out
        assert code == 1  # one box refused
        assert "to 3 boxes at 20/s" in out
        assert "done: 2 ok, 1 refused, 0 error, 0 no answer, 0 offline, 0 not sent, of 3" \
            in out
        assert "shop-02" in out and "unauthorized" in out
        code = await asyncio.to_thread(main, [
            "fleet", "cmd", "ping", "--server", server.url, "--arg", "x=1", "--json"])
        assert code == 1  # `ping` takes no argument x: refused by every box
        job = json.loads(capsys.readouterr().out)
        assert job["counts"]["refused"] == 3 and job["results"][0]["code"] == "bad_request"
        settings = tmp_path / "desired.toml"
        settings.write_text("[payments]\noffline_max_amount = 25000\n")
        assert await asyncio.to_thread(main, [
            "fleet", "config", "push", str(settings), "--server", server.url]) == 0
        assert "version 1 published: payments.offline_max_amount" in capsys.readouterr().out
        await until(server, lambda: server.operations.desired.status()["converged"] == 2)
        assert await asyncio.to_thread(main, [
            "fleet", "config", "status", "--server", server.url]) == 0
        assert "2 of 3 boxes converged" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["fleet", "jobs", "--server", server.url]) == 0
        assert "queue_drain" in capsys.readouterr().out


async def test_refusals_are_recorded_and_shown_after_a_restart_of_the_server(
        tmp_path: Path, database: str, broker: Mosquitto, operator_key: tuple[Path, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    async with fleet(tmp_path, database, broker, operator_key, signed=2, unsigned=1) as (
            server, _):
        store = server.operations.store
        await api(server, "POST", "/api/config", {
            "settings": {"payments.offline_max_amount": 30000}}, status=201)
        await until(server, lambda: server.operations.desired.status()["converged"] == 2
                    and "shop-02" in store.refusals())
        await api(server, "POST", "/api/config", {
            "settings": {"fleet.mqtt_url": "mqtt://evil.example"}}, status=201)
        await until(server, lambda: sorted(
            (d, r["version"]) for d, r in store.refusals().items()) == [
            ("shop-00", 2), ("shop-01", 2), ("shop-02", 2)])
        before = (await api(server, "GET", "/api/config"))["refused"]
        await server.stop()  # `fleet serve` restarts; the boxes answered version 2 once
        again = FleetServer(server.config)
        await again.start()
        try:
            status = await api(again, "GET", "/api/config")
            refused = {r["device_id"]: r for r in status["refused"]}
            assert (status["version"], status["converged"], len(refused)) == (2, 0, 3)
            assert refused == {r["device_id"]: r for r in before}
            assert (refused["shop-00"]["code"], refused["shop-00"]["field"]) == (
                "not_remote", "settings.fleet.mqtt_url")
            assert "'fleet.mqtt_url'" in refused["shop-00"]["message"]
            assert refused["shop-02"]["code"] == "unauthorized"
            capsys.readouterr()
            assert await asyncio.to_thread(main, [
                "fleet", "config", "status", "--server", again.url]) == 0
            out = capsys.readouterr().out
            assert "0 of 3 boxes converged, 0 pending, 0 offline, 3 refused" in out
            assert "shop-01" in out and "not_remote (settings.fleet.mqtt_url): " in out
            # a version applied ends a box's refusal, in the database too
            await api(again, "POST", "/api/config", {
                "settings": {"payments.offline_max_count": 5}}, status=201)
            await until(again, lambda: again.operations.desired.status()["converged"] == 2
                        and list(again.operations.store.refusals()) == ["shop-02"])
            assert again.operations.store.refusals()["shop-02"]["version"] == 3
        finally:
            await again.stop()
