"""The outage ledger (docs/cli.md): recorded from the box state, kept across restarts
(in-process and the real daemon), read by `storebox outages`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from firmware.cli.main import main
from firmware.components.context import BoxContext
from firmware.components.ledger import build_ledger
from firmware.config import Config, load_config_text
from firmware.ledger.outages import COLUMNS
from firmware.state import BoxState
from firmware.tokens import TokenStore
from tests.support.daemon import DaemonProcess, write_config

T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)


def config_at(tmp: Path) -> Config:
    (tmp / "state").mkdir(exist_ok=True)
    return load_config_text(f"""\
[device]
id = "store-l"
state_dir = "{tmp / 'state'}"
[wired]
isp = "KT"
[payments]
gateway_url = "http://127.0.0.1:9"
allow_insecure_gateway = true
""")


class Box:
    """The ledger on a box state, as the daemon builds it; `restart()` is a new process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = config_at(tmp)
        self.context: BoxContext | None = None
        self.state = BoxState("store-l", "9.9.9", wall=lambda: T0)

    async def start(self) -> None:
        self.state = BoxState("store-l", "9.9.9", wall=lambda: T0)
        self.context = BoxContext(self.config, self.state,
                                  TokenStore(str(self.tmp / "no-tokens")), web.Application())
        await build_ledger(self.context)

    async def stop(self) -> None:
        assert self.context is not None
        for closer in reversed(self.context.closers):
            await closer()

    def wired(self, state: str, at: datetime, carrier: bool = True,
              reason: str | None = None) -> None:
        self.state.update(self.state.uplink.wired, state=state, since=at, carrier=carrier,
                          reason=reason)

    def sale_offline(self, amount: int) -> None:
        pay = self.state.payments
        self.state.update(pay, queued=pay.queued + 1, queued_amount=pay.queued_amount + amount)


def outages_cli(tmp: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    config = tmp / "storebox.toml"
    if not config.exists():
        config.write_text(f'[device]\nid = "store-l"\nstate_dir = "{tmp / "state"}"\n'
                          '[payments]\ngateway_url = "https://gateway.example"\n')
    assert main(["outages", "--config", str(config), *args]) == 0
    return capsys.readouterr().out


async def test_an_outage_is_recorded_with_its_offline_payments(tmp_path: Path) -> None:
    box = Box(tmp_path)
    await box.start()
    box.wired("up", T0)
    assert box.state.outages.open == [] and box.state.outages.total == 0
    box.wired("down", T0 + timedelta(minutes=1), carrier=False, reason="no carrier")
    assert box.state.outages.open == ["wired"]
    box.sale_offline(12500)
    box.sale_offline(7500)
    box.state.update(box.state.payments, queued=1, queued_amount=7500)  # one forwarded
    box.sale_offline(1000)
    box.wired("degraded", T0 + timedelta(minutes=6))  # working again, if poorly
    assert box.state.outages.open == []
    (row,) = box.state.outages.ended
    assert {k: row[k] for k in COLUMNS} == {
        "uplink": "wired", "isp": "KT", "started_at": "2021-10-25T11:21:00+00:00",
        "ended_at": "2021-10-25T11:26:00+00:00", "duration_s": 300.0,
        "detected_by": "carrier", "cause_hint": "no carrier", "payments_offline": 3,
        "payments_offline_amount": 21000}
    box.sale_offline(500)  # after the outage: not counted
    box.wired("down", T0 + timedelta(minutes=10), reason="probes failed")
    box.wired("up", T0 + timedelta(minutes=11))
    second = box.state.outages.ended[-1]
    assert (second["detected_by"], second["payments_offline"]) == ("probes", 0)
    assert box.state.outages.total == 2
    await box.stop()


async def test_an_open_outage_survives_a_restart_and_ends_after_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Box(tmp_path)
    await box.start()
    box.wired("down", T0, carrier=False)
    box.sale_offline(100)
    await box.stop()
    await box.start()  # the new process: the state knows nothing yet ("unknown")
    assert box.state.outages.open == ["wired"] and box.state.outages.total == 1
    box.sale_offline(200)
    box.wired("up", T0 + timedelta(seconds=90))
    (row,) = box.state.outages.ended
    assert (row["duration_s"], row["payments_offline"], row["payments_offline_amount"]) \
        == (90.0, 2, 300)
    await box.stop()
    rows = list(csv.DictReader(io.StringIO(outages_cli(tmp_path, "--csv", capsys=capsys))))
    assert len(rows) == 1 and tuple(rows[0]) == COLUMNS
    assert rows[0]["duration_s"] == "90.0" and rows[0]["payments_offline_amount"] == "300"


async def test_storebox_outages_csv_json_and_since(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert outages_cli(tmp_path, "--csv", capsys=capsys) == ",".join(COLUMNS) + "\n"
    box = Box(tmp_path)
    await box.start()
    for hour in (0, 5):
        box.wired("down", T0 + timedelta(hours=hour), reason=f"outage at +{hour}h")
        box.wired("up", T0 + timedelta(hours=hour, minutes=2))
    box.wired("down", T0 + timedelta(hours=9))  # still going on
    await box.stop()
    text = outages_cli(tmp_path, "--csv", capsys=capsys)
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 4
    assert lines[1].startswith("wired,KT,2021-10-25T11:20:00+00:00,2021-10-25T11:22:00+00:00,"
                               "120.0,probes,outage at +0h,0,0")
    assert lines[3].startswith("wired,KT,2021-10-25T20:20:00+00:00,,,probes")
    since = json.loads(outages_cli(tmp_path, "--json", "--since", "2021-10-25T13:00:00Z",
                                   capsys=capsys))
    assert [r["cause_hint"] for r in since] == ["outage at +5h", None]
    assert "ongoing" in outages_cli(tmp_path, capsys=capsys)


async def test_the_ledger_across_a_daemon_restart(
        netns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, debug={
        "extra_components": ["tests.fleet.components:wired_from_env"]})
    daemon = DaemonProcess(netns, config, env={"SBX_TEST_WIRED": "down"})
    try:
        await asyncio.to_thread(daemon.notify.wait_for, "READY", "1")
        status = await asyncio.to_thread(daemon.get, "/v1/status")
        assert status["outages"]["open"] == ["wired"], status["outages"]
        daemon.signal(signal.SIGTERM)  # a clean stop (stop() would close the notify socket)
        assert await asyncio.to_thread(daemon.proc.wait, 10) == 0
        daemon.env["SBX_TEST_WIRED"] = "up"
        await asyncio.to_thread(daemon.restart)
        status = await asyncio.to_thread(daemon.get, "/v1/status")
        assert status["outages"]["open"] == [] and status["outages"]["total"] == 1
        last = status["outages"]["last"]
        assert (last["uplink"], last["isp"], last["detected_by"]) == ("wired", "KT", "carrier")
        assert last["ended_at"] is not None and last["duration_s"] > 0
    finally:
        await asyncio.to_thread(daemon.stop)
    rows = json.loads(outages_cli(tmp_path, "--json", capsys=capsys))
    assert [(r["uplink"], r["detected_by"]) for r in rows] == [("wired", "carrier")]
