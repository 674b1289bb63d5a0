"""NetworkManagerRoutes against a real NetworkManager 1.42 running in the box namespace."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from dbus_fast import Variant

from failover.errors import UplinkUnavailableError
from failover.routes import RouteController, Uplink
from failover.routes_nm import NetworkManagerRoutes, applied_metric, with_route_metric
from tests.failover.conftest import (
    GATEWAY_IP,
    LAN_CLIENT,
    LTE_ADDR,
    LTE_ADDR6,
    LTE_GW,
    LTE_GW6,
    WIRED_ADDR,
    WIRED_ADDR6,
    WIRED_GW,
    WIRED_GW6,
    Shop,
    build_shop,
    ipn,
    route_dev,
    seen_source,
    sysctl,
)
from tests.failover.routewatch import LinkWatch, RouteWatch, preferred
from tests.support.nm import NetworkManagerInNetns, NMConnection, network_manager

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]


@dataclass
class NMShop:
    shop: Shop
    nm: NetworkManagerInNetns


@pytest.fixture
def nm_shop() -> Iterator[NMShop]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    with build_shop(os_routes=False, box_addresses=False, ipv6=True) as shop:
        for key in ("all", "default", "wan0", "wwan0"):
            sysctl(shop.box, f"net.ipv6.conf.{key}.accept_dad", "0")
        connections = [
            NMConnection("wired", "wan0", f"{WIRED_ADDR}/24", WIRED_GW, 100,
                         f"{WIRED_ADDR6}/64", WIRED_GW6),
            NMConnection("lte", "wwan0", f"{LTE_ADDR}/24", LTE_GW, 600,
                         f"{LTE_ADDR6}/64", LTE_GW6),
        ]
        with network_manager(shop.box, connections) as nm:
            yield NMShop(shop, nm)


@pytest.fixture
async def routes(nm_shop: NMShop) -> AsyncIterator[NetworkManagerRoutes]:
    controller = NetworkManagerRoutes(UPLINKS, bus_address=nm_shop.nm.bus_address,
                                      netns=nm_shop.shop.box)
    yield controller
    await controller.close()


def metrics(ns: str, *family: str) -> dict[str, int]:
    out = json.loads(ipn(ns, *family, "-j", "route", "show", "default").stdout)
    found: dict[str, int] = {}
    for r in out:
        assert r["dev"] not in found, f"two default routes on {r['dev']}: {out}"
        found[r["dev"]] = int(r.get("metric", 0))
    return found


def links(ns: str) -> dict[str, tuple[int, bool]]:
    out = json.loads(ipn(ns, "-j", "link", "show").stdout)
    return {link["ifname"]: (int(link["ifindex"]), "LOWER_UP" in link["flags"]) for link in out}


def addresses6(ns: str) -> set[tuple[str, str]]:
    out = json.loads(ipn(ns, "-6", "-j", "addr", "show").stdout)
    return {(link["ifname"], a["local"]) for link in out for a in link.get("addr_info", [])}


def active_connection(nm: NetworkManagerInNetns, interface: str) -> str:
    return nm.nmcli("-g", "GENERAL.CON-PATH", "device", "show", interface).stdout.strip()


def test_with_route_metric_drops_deprecated_forms() -> None:
    applied = {"connection": {"id": Variant("s", "wired")},
               "ipv4": {"method": Variant("s", "manual"),
                        "addresses": Variant("aau", [[1, 24, 2]]),
                        "address-data": Variant("aa{sv}", [{"address": Variant("s", "10.1.0.2"),
                                                            "prefix": Variant("u", 24)}]),
                        "route-metric": Variant("x", 100)}}
    new = with_route_metric(applied, 50)
    assert "addresses" not in new["ipv4"] and "address-data" in new["ipv4"]
    assert applied_metric(new) == 50 and applied_metric(applied) == 100  # a copy
    assert "ipv6" not in new


async def test_reapply_moves_the_kernel_route_without_a_link_flap(
        nm_shop: NMShop, routes: NetworkManagerRoutes) -> None:
    box, nm = nm_shop.shop.box, nm_shop.nm
    assert isinstance(routes, RouteController)
    assert metrics(box) == {"wan0": 100, "wwan0": 600}
    await routes.activate("wired")
    assert metrics(box) == {"wan0": 50, "wwan0": 600}
    before_links = links(box)
    before_conns = {i: active_connection(nm, i) for i in ("wan0", "wwan0")}
    before_v6 = addresses6(box)

    async with LinkWatch(box) as watch:
        await routes.activate("lte")
        await watch.stop()

    assert metrics(box) == {"wwan0": 50, "wan0": 100}
    assert metrics(box, "-6") == {"wwan0": 50, "wan0": 100}
    assert route_dev(box, GATEWAY_IP) == "wwan0"
    assert route_dev(box, GATEWAY_IP, "from", LAN_CLIENT, "iif", "lan0") == "wwan0"
    assert route_dev(box, "2001:db8:ffff::1") == "wwan0"
    assert seen_source(box, GATEWAY_IP) == LTE_ADDR
    assert seen_source(box, GATEWAY_IP, device="wan0") == WIRED_ADDR
    # No flap: same ifindex and carrier, the link never went down, no IPv4 address
    # removed, and the same active connections (Reapply, not a re-activation).
    assert links(box) == before_links
    assert watch.link_flaps({"wan0", "wwan0"}) == [], watch.links
    assert watch.removed({"wan0", "wwan0"}, ipv6=False) == [], watch.addresses
    assert {i: active_connection(nm, i) for i in ("wan0", "wwan0")} == before_conns
    # NetworkManager 1.42 toggles disable_ipv6 on every effective Reapply (its log:
    # "addrgenmode6: toggle disable_ipv6 sysctl"), so a reapplied device's IPv6
    # addresses are removed and re-added within the call; they are all back.
    assert addresses6(box) == before_v6
    # The profile on disk is untouched; only the applied connection changed.
    assert nm.nmcli("-g", "ipv4.route-metric", "connection", "show", "lte").stdout.strip() == "600"

    state = await routes.describe()
    assert state["active"] == "lte"
    assert state["uplinks"]["lte"]["networkmanager"]["applied_metric"] == 50
    assert state["uplinks"]["lte"]["networkmanager"]["connection"] == "lte"
    assert state["uplinks"]["wired"]["role"] == "standby"


async def test_make_before_break_through_networkmanager(nm_shop: NMShop,
                                                       routes: NetworkManagerRoutes) -> None:
    box = nm_shop.shop.box
    await routes.activate("wired")
    async with RouteWatch(box) as watch:
        await routes.activate("lte")
        await routes.activate("wired")
        await watch.stop()
    states = watch.states()
    assert len(states) > 4, watch.events
    for i, state in enumerate(states):
        assert {k[0] for k in state} == {"wan0", "wwan0"}, (
            f"an uplink had no default route after event {i}: {watch.events[:i]}")
    path = [preferred(s) for s in states]
    changes = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    assert changes == ["wan0", "wwan0", "wan0"], (path, watch.events)
    # The new uplink was raised first: the old one had not been touched yet.
    kind, key, _ = watch.events[0]
    assert (kind, key[0], key[1]) == ("RTM_NEWROUTE", "wwan0", 49), watch.events
    assert metrics(box) == {"wan0": 50, "wwan0": 600}


async def test_ensure_present_reapplies_after_networkmanager_reactivates(
        nm_shop: NMShop, routes: NetworkManagerRoutes) -> None:
    box, nm = nm_shop.shop.box, nm_shop.nm
    await routes.activate("lte")
    # The modem reconnects: NetworkManager re-activates the profile, metric 600 again.
    nm.nmcli("connection", "up", "lte")
    assert metrics(box)["wwan0"] == 600
    assert route_dev(box, GATEWAY_IP) == "wan0"
    assert await routes.ensure_present(["wired", "lte"]) == []
    assert metrics(box) == {"wwan0": 50, "wan0": 100}
    # Idempotent: nothing more to do.
    async with RouteWatch(box) as watch:
        assert await routes.ensure_present(["wired", "lte"]) == []
        await routes.activate("lte")
        await watch.stop()
    assert watch.events == []

    await routes.deactivate_all()
    assert metrics(box) == {"wan0": 100, "wwan0": 600}
    assert (await routes.describe())["active"] is None


async def test_an_inactive_device_is_unavailable(nm_shop: NMShop,
                                                routes: NetworkManagerRoutes) -> None:
    box, nm = nm_shop.shop.box, nm_shop.nm
    await routes.activate("wired")
    nm.nmcli("device", "disconnect", "wwan0")
    with pytest.raises(UplinkUnavailableError, match=r"uplink 'lte' \('wwan0'\).*NotActive"):
        await routes.activate("lte")
    problems = await routes.ensure_present(["wired", "lte"])
    assert [(p.uplink, p.interface) for p in problems] == [("lte", "wwan0")]
    assert metrics(box) == {"wan0": 50}
    state = await routes.describe()
    assert "NotActive" in state["uplinks"]["lte"]["networkmanager"]["error"]
    assert state["uplinks"]["lte"]["role"] == "absent"
