"""Probe names resolve through the uplink probed, with the resolvers it learnt (issue #13).

The shop in namespaces, its uplinks owned by a real NetworkManager (`tests/support/nm.py`):
wired's profile gives the resolver 10.1.0.1 (as a DHCP lease would), LTE's none; the
modem reports SK Telecom's resolver for its data call (AT+CGCONTRDP, `modem.dns`), here
served by the LTE ISP. Each resolver is a real DNS server (`lab.dns`) answering every name
with its own address, and counting the queries it got. The probes get their options from
the firmware's wiring (`firmware.components.failover.probe_options` over
`firmware.uplink_dns.UplinkResolvers`), exactly as the daemon builds them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from failover.probes.round import probe
from failover.targets import parse_target
from firmware.components.failover import probe_options
from firmware.components.modem import apply_snapshot
from firmware.lan.resolvers import NetworkManagerResolvers
from firmware.state import BoxState
from firmware.uplink_dns import Uplink, UplinkResolvers
from hw.modem.status import ModemStatus
from lab.box import configure
from lab.dns import DnsResponder
from tests.failover.conftest import (
    GATEWAY_IP,
    LTE_ADDR,
    LTE_GW,
    OTHER_IP,
    WIRED_ADDR,
    WIRED_GW,
    Shop,
    build_shop,
    ipn,
)
from tests.support.clock import ManualClock
from tests.support.daemon import base_config
from tests.support.netns import inside
from tests.support.nm import NetworkManagerInNetns, NMConnection, network_manager

WIRED_DNS, WIRED_DNS2 = "10.1.0.1", "10.1.0.53"
SKT_DNS, SKT_DNS2 = "210.220.163.82", "219.250.36.130"
#: A probe target by name: each resolver says where it is, both addresses answer pings.
TARGET = parse_target("icmp:gateway.shop-test.example")


@dataclass
class World:
    shop: Shop
    nm: NetworkManagerInNetns
    state: BoxState
    clock: ManualClock
    resolvers: UplinkResolvers
    dns: dict[str, DnsResponder]

    async def probe(self, uplink: Uplink) -> tuple[bool, str | None]:
        config = self.resolvers.config
        interface = config.wired.interface if uplink == "wired" else config.lte.interface
        options = probe_options(config, self.resolvers)[uplink]
        with inside(self.shop.box):
            result = await probe(TARGET, interface, 2.0, options=options)
        return result.ok, result.error

    def modem(self, *dns: str) -> None:
        apply_snapshot(self.state, ModemStatus(present=True, registered=True, data_up=True,
                                               ip=LTE_ADDR, dns=dns))

    async def learnt(self, uplink: Uplink, expected: tuple[str, ...], timeout: float = 15.0
                     ) -> None:
        """Refresh (time passing on the clock) until NetworkManager says `expected`."""
        started = time.monotonic()
        while self.resolvers.learnt(uplink) != expected:
            assert time.monotonic() - started < timeout, self.resolvers.learnt(uplink)
            self.clock.advance(self.resolvers.max_age_s)
            await self.resolvers.refresh()
            await asyncio.sleep(0.05)  # NetworkManager applies the change meanwhile


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    if os.geteuid() != 0 or shutil.which("NetworkManager") is None:
        pytest.skip("needs root and NetworkManager (make deps)")
    with build_shop(os_routes=False, box_addresses=False) as shop:
        for ns, address in ((shop.isp_wired, WIRED_DNS2), (shop.isp_lte, SKT_DNS),
                            (shop.isp_lte, SKT_DNS2)):
            ipn(ns, "addr", "add", f"{address}/32", "dev", "lo")
        connections = [
            NMConnection("wired", "wan0", f"{WIRED_ADDR}/24", WIRED_GW, 100,
                         dns4=(WIRED_DNS,)),
            NMConnection("lte", "wwan0", f"{LTE_ADDR}/24", LTE_GW, 600)]
        dns = {WIRED_DNS: DnsResponder(shop.isp_wired, WIRED_DNS, GATEWAY_IP),
               WIRED_DNS2: DnsResponder(shop.isp_wired, WIRED_DNS2, GATEWAY_IP),
               SKT_DNS: DnsResponder(shop.isp_lte, SKT_DNS, OTHER_IP),
               SKT_DNS2: DnsResponder(shop.isp_lte, SKT_DNS2, OTHER_IP)}
        try:
            with network_manager(shop.box, connections) as nm:
                config = configure(base_config(tmp_path),
                                   routing={"backend": "networkmanager"},
                                   wired={"interface": "wan0", "dns": []},
                                   lte={"interface": "wwan0", "dns": []})
                state = BoxState("store-test", "1.2.3")
                clock = ManualClock()
                learn = NetworkManagerResolvers(bus_address=nm.bus_address)
                resolvers = UplinkResolvers(config, state, learn, monotonic=clock.monotonic)
                world = World(shop, nm, state, clock, resolvers, dns)
                world.modem(SKT_DNS)
                try:
                    await world.learnt("wired", (WIRED_DNS,))
                    yield world
                finally:
                    await learn.close()
        finally:
            for responder in dns.values():
                responder.close()


def queries(world: World) -> dict[str, int]:
    return {address: responder.queries for address, responder in world.dns.items()}


async def test_each_uplinks_probe_names_resolve_with_what_that_uplink_learnt(
        world: World) -> None:
    before = queries(world)
    assert await world.probe("wired") == (True, None)
    after_wired = queries(world)
    assert after_wired[WIRED_DNS] > before[WIRED_DNS]  # NetworkManager's, over wired
    assert {a: after_wired[a] - before[a] for a in (SKT_DNS, SKT_DNS2, WIRED_DNS2)} == \
        dict.fromkeys((SKT_DNS, SKT_DNS2, WIRED_DNS2), 0)

    assert await world.probe("lte") == (True, None)
    after_lte = queries(world)
    assert after_lte[SKT_DNS] > after_wired[SKT_DNS]  # the modem's, over LTE
    assert after_lte[WIRED_DNS] == after_wired[WIRED_DNS]


async def test_the_wired_resolver_dying_fails_wireds_name_probes_only(world: World) -> None:
    world.dns[WIRED_DNS].close()  # the wired ISP's resolver is gone, the line is not
    ok, error = await world.probe("wired")
    assert not ok and error is not None, error
    assert await world.probe("lte") == (True, None)  # LTE's names still resolve


async def test_new_resolvers_count_without_a_restart(world: World) -> None:
    """A DHCP renewal's new resolvers (here the profile's, reapplied), a modem's new data
    call: the next probes ask the new ones."""
    world.nm.nmcli("connection", "modify", "wired", "ipv4.dns", WIRED_DNS2)
    world.nm.nmcli("device", "reapply", "wan0")
    await world.learnt("wired", (WIRED_DNS2,))
    world.dns[WIRED_DNS].close()  # the old one is gone: only the new one can answer
    assert await world.probe("wired") == (True, None)
    assert world.dns[WIRED_DNS2].queries >= 1

    world.modem(SKT_DNS2)  # the modem reconnected: read from the state, no refresh
    before = world.dns[SKT_DNS].queries
    assert await world.probe("lte") == (True, None)
    assert world.dns[SKT_DNS2].queries >= 1 and world.dns[SKT_DNS].queries == before
