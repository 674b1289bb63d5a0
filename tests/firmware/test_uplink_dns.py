"""Each uplink's resolvers (`firmware.uplink_dns`): the rule, and how what is learnt is
followed while the box runs (the clock injected; NetworkManager a fake that counts)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from failover.errors import ProbeConfigError
from failover.probes.options import ProbeOptions
from firmware.components.failover import probe_options
from firmware.components.modem import apply_snapshot
from firmware.state import BoxState
from firmware.uplink_dns import MAX_AGE_S, UplinkResolvers
from hw.modem.status import ModemStatus
from lab.box import configure
from tests.support.clock import ManualClock
from tests.support.daemon import base_config


class FakeNetworkManager:
    """What NetworkManager holds per interface, and how often it was asked."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.held = {"wan0": ("10.1.0.1",), "wwan0": ()}
        self.asked = 0
        self.clock = clock
        self.times: list[float] = []

    async def __call__(self, interface: str) -> tuple[str, ...]:
        self.asked += 1
        if self.clock is not None:
            self.times.append(self.clock.monotonic())
        return self.held.get(interface, ())


def make(tmp: Path, *, wired_dns: list[str] | None = None, lte_dns: list[str] | None = None,
         learn: FakeNetworkManager | None = None
         ) -> tuple[UplinkResolvers, BoxState, ManualClock]:
    config = configure(base_config(tmp), wired={"interface": "wan0", "dns": wired_dns or []},
                       lte={"interface": "wwan0", "dns": lte_dns or []})
    state = BoxState("store-test", "1.2.3")
    clock = ManualClock()
    return UplinkResolvers(config, state, learn, monotonic=clock.monotonic), state, clock


def modem(state: BoxState, *dns: str, up: bool = True) -> None:
    apply_snapshot(state, ModemStatus(present=True, registered=True, data_up=up,
                                      ip="10.2.0.2" if up else None, dns=dns if up else ()))


async def test_configured_wins_then_networkmanagers_then_for_lte_the_modems(
        tmp_path: Path) -> None:
    nm = FakeNetworkManager()
    resolvers, state, _ = make(tmp_path, wired_dns=["10.1.0.9"], learn=nm)
    modem(state, "210.220.163.82")
    await resolvers.refresh()
    assert resolvers.own("wired") == ("10.1.0.9",)  # configured, though NM knows another
    assert resolvers.own("lte") == ("210.220.163.82",)  # NM has none for wwan0: the modem's
    nm.held["wwan0"] = ("10.2.0.53",)
    nm.held["wan0"] = ()
    resolvers, state, _ = make(tmp_path, learn=nm)
    modem(state, "210.220.163.82")
    await resolvers.refresh()
    assert resolvers.own("lte") == ("10.2.0.53",)  # NetworkManager's before the modem's
    assert resolvers.own("wired") == ()  # wired never takes the modem's


async def test_networkmanager_is_asked_again_once_its_answer_is_old(tmp_path: Path) -> None:
    nm = FakeNetworkManager()
    resolvers, _, clock = make(tmp_path, learn=nm)
    probes = probe_options(resolvers.config, resolvers)
    await resolvers.refresh()
    assert nm.asked == 2 and probes["wired"].servers() == ("10.1.0.1",)
    nm.held["wan0"] = ("10.1.0.77",)  # a DHCP renewal brought another resolver
    clock.advance(MAX_AGE_S - 0.1)
    await resolvers.refresh()  # the LAN and the failover component both call it
    await resolvers.refresh()
    assert nm.asked == 2 and probes["wired"].servers() == ("10.1.0.1",)
    clock.advance(0.1)
    await resolvers.refresh()
    assert nm.asked == 4
    assert probes["wired"].servers() == ("10.1.0.77",)  # the same options, no rebuild


async def test_follow_refreshes_every_max_age_and_not_at_all_without_networkmanager(
        tmp_path: Path) -> None:
    nm = FakeNetworkManager()
    resolvers, _, clock = make(tmp_path, learn=nm)
    nm.clock = clock
    started = clock.monotonic()
    task = asyncio.create_task(resolvers.follow(sleep=clock.sleep))
    while nm.asked < 6:  # three refreshes of both uplinks
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [t - started for t in nm.times[:6]] == pytest.approx(
        [0, 0, MAX_AGE_S, MAX_AGE_S, 2 * MAX_AGE_S, 2 * MAX_AGE_S])
    quiet, _, _ = make(tmp_path)
    assert not quiet.polls
    await asyncio.wait_for(quiet.follow(sleep=clock.sleep), 1)  # returns: nothing to poll


async def test_a_modem_reconnect_counts_at_the_next_probe(tmp_path: Path) -> None:
    resolvers, state, _ = make(tmp_path)
    lte = probe_options(resolvers.config, resolvers)["lte"]
    assert lte.servers() == ()  # no data call: the system resolver
    modem(state, "210.220.163.82", "219.250.36.130")
    assert lte.servers() == ("210.220.163.82", "219.250.36.130")
    modem(state, up=False)
    assert lte.servers() == ()
    modem(state, "203.248.252.2")
    assert lte.servers() == ("203.248.252.2",)


def test_probe_options_ask_the_configured_then_the_learnt_ones_that_are_addresses() -> None:
    learnt = ["10.1.0.1", "10.1.0.53", "not-an-address"]
    options = ProbeOptions(dns_servers=("10.1.0.53",), resolvers=lambda: learnt)
    assert options.servers() == ("10.1.0.53", "10.1.0.1")
    learnt[:] = []
    assert options.servers() == ("10.1.0.53",)
    with pytest.raises(ProbeConfigError, match="dns_servers"):
        ProbeOptions(dns_servers=("resolver.example",))
