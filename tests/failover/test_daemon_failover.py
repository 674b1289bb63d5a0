"""The whole box in a shop made of namespaces: the real daemon watching real uplinks.

A KT-style blackhole at the wired ISP (link up, nothing through) moves traffic to LTE;
LTE failing as well puts the box in offline mode, where payments stand in at once; when
both recover, traffic fails back to wired and the offline payments are forwarded once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from firmware.cli.client import get_json
from lab.faults import blackhole, heal
from lab.gateway_sim import GatewaySimulator
from tests.failover.conftest import (
    GATEWAY_IP,
    LAN_BOX,
    LTE_ADDR,
    OTHER_IP,
    PORT,
    WIRED_ADDR,
    Shop,
    ipn,
)
from tests.support import netns
from tests.support.box import API, payment_body, pinned_session
from tests.support.daemon import MERCHANT_KEY, TOKEN, DaemonProcess, write_config
from tests.support.netns import inside

SIM_PORT = 9443
API_PORT = 18470


@dataclass
class Store:
    shop: Shop
    daemon: DaemonProcess
    sim: GatewaySimulator
    session: aiohttp.ClientSession

    def status(self) -> dict[str, Any]:
        return get_json(self.daemon.socket_address, "/v1/status", TOKEN)

    async def wait(self, check: Callable[[dict[str, Any]], bool], what: str,
                   timeout: float = 15.0) -> float:
        """Seconds until the status satisfies `check` (asked every 50 ms)."""
        started = time.monotonic()
        while not check(self.status()):
            assert time.monotonic() - started < timeout, f"{what}: {self.status()['uplink']}"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def pay(self, amount: int, key: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key}
        async with self.session.post(f"{API}/v1/payments",
                                     data=json.dumps(payment_body(amount)).encode(),
                                     headers=headers) as r:
            assert r.status == 200, await r.text()
            return await r.json()  # type: ignore[no-any-return]


def route_dev(ns: str, dst: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "-j", "route", "get", dst], check=True,
                         capture_output=True, text=True).stdout
    return str(json.loads(out)[0]["dev"])


@pytest.fixture
async def store(shop: Shop, tmp_path: Path, request: pytest.FixtureRequest
                ) -> AsyncIterator[Store]:
    param = getattr(request, "param", {})
    lte_extra, probes_extra = param if isinstance(param, tuple) else (param, {})
    with inside(shop.internet):
        sim = GatewaySimulator(MERCHANT_KEY, host=GATEWAY_IP, port=SIM_PORT, seed=3)
        url = await sim.start()
    config = write_config(
        tmp_path, gateway_url=url,
        routing={"backend": "netlink", "failover": True, "failback_after_s": 2.0,
                 "lan_interfaces": ["lan0"]},
        lte={"interface": "wwan0", "simulator": "SKT", **(lte_extra or {})},
        wired={"interface": "wan0", "carrier": "KT"},
        probes={"targets": [f"tcp:{GATEWAY_IP}:{SIM_PORT}", f"tcp:{OTHER_IP}:{PORT}",
                            f"icmp:{GATEWAY_IP}"], **probes_extra},
    )
    daemon = DaemonProcess(shop.box, config)
    try:
        daemon.notify.wait_for("READY", "1")
        pin = daemon.pin
        with inside(shop.box):
            async with pinned_session(pin) as session:
                yield Store(shop, daemon, sim, session)
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
        await sim.stop()


async def test_blackhole_offline_mode_and_recovery(store: Store) -> None:
    shop = store.shop
    await store.wait(lambda s: s["uplink"]["active"] == "wired", "wired active at start")
    await store.wait(lambda s: s["uplink"]["lte"]["state"] == "standby", "LTE standby")
    online = await store.pay(1000, "fo-1")
    assert online["status"] == "approved" and online["mode"] == "online"

    blackhole(shop.isp_wired, "cust0")  # KT 2021: the link stays up, nothing gets through
    took = await store.wait(lambda s: s["uplink"]["active"] == "lte", "failover to LTE")
    print(f"blackhole -> LTE active: {took:.2f} s")
    assert took < 5.0
    status = store.status()
    assert status["uplink"]["wired"]["state"] == "down"
    # the default probes.detector: the sequential test (1.2-1.4 s by design)
    assert any(e["kind"] == "failover" and "sequential test" in e["message"]
               for e in status["recent_events"]), status["recent_events"]
    assert status["uplink"]["failovers_total"] == 1
    assert any(e["kind"] == "failover" for e in status["recent_events"])
    assert route_dev(shop.box, GATEWAY_IP) == "wwan0"
    assert route_dev(shop.client, GATEWAY_IP) == "eth0"  # LAN still routed via the box
    via_lte = await store.pay(2000, "fo-2")
    assert via_lte["status"] == "approved" and via_lte["mode"] == "online"

    blackhole(shop.isp_lte, "cust0")  # the carrier's mobile network fails as well
    await store.wait(lambda s: s["uplink"]["active"] == "none", "offline mode")
    started = time.monotonic()
    offline = await store.pay(3000, "fo-3")
    assert time.monotonic() - started < 1.0  # no online deadline to wait out
    assert offline["status"] == "approved_offline"
    assert any(e["kind"] == "offline_mode" for e in store.status()["recent_events"])

    heal(shop.isp_lte)
    heal(shop.isp_wired)
    await store.wait(lambda s: s["uplink"]["active"] == "wired", "back on wired", 30)
    status = store.status()
    moves = [e["message"] for e in status["recent_events"] if e["kind"] in ("failover", "failback")]
    assert status["uplink"]["failbacks_total"] == 1, moves  # from offline mode, too
    await store.sim.wait_stored(offline["id"])
    await store.wait(lambda s: s["payments"]["queued"] == 0, "queue drained")
    assert store.sim.processed_count(offline["id"]) == 1
    assert route_dev(shop.box, GATEWAY_IP) == "wan0"


@pytest.mark.parametrize("store", [({}, {"detector": "rounds"})], indirect=True)
async def test_rounds_detector_stays_selectable(store: Store) -> None:
    """probes.detector = "rounds" (the default is "sequential"): wired is judged by the
    rounds test (its verdict names it), a blackhole moves traffic to LTE, and it comes
    back."""
    shop = store.shop
    await store.wait(lambda s: s["uplink"]["active"] == "wired", "wired active at start")
    await store.wait(lambda s: s["uplink"]["lte"]["state"] == "standby", "LTE standby")
    blackhole(shop.isp_wired, "cust0")
    took = await store.wait(lambda s: s["uplink"]["active"] == "lte", "failover to LTE")
    print(f"blackhole -> LTE active (rounds): {took:.2f} s")
    status = store.status()
    assert status["uplink"]["wired"]["state"] == "down"
    assert any(e["kind"] == "failover" and "4 consecutive failed rounds" in e["message"]
               for e in status["recent_events"]), status["recent_events"]
    assert took >= 2.4  # 2.5-3.0 s by design: the rounds test, not the sequential one
    assert route_dev(shop.box, GATEWAY_IP) == "wwan0"
    heal(shop.isp_wired)
    await store.wait(lambda s: s["uplink"]["active"] == "wired", "back on wired", 30)
    assert store.status()["uplink"]["failovers_total"] == 1


@pytest.mark.parametrize("store", [{"dual_sim": True}], indirect=True)
async def test_lte_failing_while_active_tries_the_other_sim_first(store: Store) -> None:
    shop = store.shop
    await store.wait(lambda s: s["uplink"]["active"] == "wired", "wired active at start")
    blackhole(shop.isp_wired, "cust0")
    await store.wait(lambda s: s["uplink"]["active"] == "lte", "failover to LTE")
    blackhole(shop.isp_lte, "cust0")
    took = await store.wait(lambda s: s["modem"]["sim_slot"] == 1, "the SIM switch")
    assert took < 10
    status = store.status()
    switches = [e for e in status["recent_events"]
                if e["kind"] == "modem_reset" and e.get("step") == "sim_switch"]
    assert len(switches) == 1
    # the second SIM's network is dead too here: offline mode follows
    await store.wait(lambda s: s["uplink"]["active"] == "none", "offline mode", 30)


def tcp_state(ns: str, host: str, port: int, pin: str | None = None) -> str:
    """"open" (connected; with `pin`, the TLS handshake showed that certificate),
    "dropped" (no answer) or "refused"."""
    def pinned(s: socket.socket) -> None:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # pinned
        with context.wrap_socket(s) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None and hashlib.sha256(der).hexdigest() == pin

    return netns.tcp_state(ns, host, port, timeout_s=1.0,
                           greeted=None if pin is None else pinned)


async def test_the_api_is_closed_to_the_uplinks_before_any_decision(
        shop: Shop, tmp_path: Path) -> None:
    """Both uplinks dead from the start: the engine never chooses one, so it never applies
    the table; the firewall is there anyway, from before the API listened on 0.0.0.0."""
    for isp in (shop.isp_wired, shop.isp_lte):  # the ISPs lose the internet
        ipn(isp, "link", "set", "core0", "down")
    config = write_config(
        tmp_path, port=API_PORT,
        routing={"backend": "netlink", "failover": True, "lan_interfaces": ["lan0"]},
        lte={"interface": "wwan0", "simulator": "SKT"},
        wired={"interface": "wan0", "carrier": "KT"},
        probes={"targets": [f"tcp:{GATEWAY_IP}:{SIM_PORT}", f"tcp:{OTHER_IP}:{PORT}",
                            f"icmp:{GATEWAY_IP}"]})
    text = config.read_text()
    assert f'"127.0.0.1:{API_PORT}"' in text
    config.write_text(text.replace(f'"127.0.0.1:{API_PORT}"', f'"0.0.0.0:{API_PORT}"'))
    daemon = DaemonProcess(shop.box, config)
    try:
        daemon.notify.wait_for("READY", "1")
        pin = daemon.pin
        await asyncio.sleep(2.0)  # rounds fail on both; no uplink is chosen
        uplink = daemon.get("/v1/status")["uplink"]
        assert uplink["active"] == "none" and uplink["failovers_total"] == 0, uplink
        assert uplink["wired"]["state"] != "up" and uplink["lte"]["state"] != "up", uplink
        # the carriers' side (and anyone they route) cannot reach the API
        assert tcp_state(shop.isp_wired, WIRED_ADDR, API_PORT) == "dropped"
        assert tcp_state(shop.isp_lte, LTE_ADDR, API_PORT) == "dropped"
        # the POS on the LAN can, and gets the box it pinned
        assert tcp_state(shop.client, LAN_BOX, API_PORT, pin) == "open"
        assert tcp_state(shop.box, "127.0.0.1", API_PORT, pin) == "open"
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
