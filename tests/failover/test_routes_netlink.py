"""NetlinkRoutes against a real kernel: a box namespace between two ISPs and a LAN."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from failover.errors import RouteConfigError, UplinkUnavailableError
from failover.routes import (
    MetricChange,
    MetricScheme,
    RouteController,
    Uplink,
    plan_metric_changes,
)
from failover.routes_netlink import Netlink, NetlinkRoutes
from tests.failover.conftest import (
    GATEWAY_IP,
    LAN_CLIENT,
    LTE_ADDR,
    LTE_GW,
    WIRED_ADDR,
    WIRED_GW,
    Shop,
    build_shop,
    ipn,
    route_dev,
    seen_source,
)
from tests.failover.routewatch import RouteWatch, current_defaults, preferred

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]


@pytest.fixture
async def routes(shop: Shop) -> AsyncIterator[NetlinkRoutes]:
    controller = NetlinkRoutes(UPLINKS, netns=shop.box)
    yield controller
    await controller.close()


def defaults(ns: str, *family: str) -> dict[str, dict[str, object]]:
    """Default routes by interface (one per interface expected)."""
    out = json.loads(ipn(ns, *family, "-j", "route", "show", "default").stdout)
    by_dev: dict[str, dict[str, object]] = {}
    for r in out:
        assert r["dev"] not in by_dev, f"two default routes on {r['dev']}: {out}"
        by_dev[r["dev"]] = r
    return by_dev


# -- pure planning -------------------------------------------------------------------

def test_plan_raises_the_new_uplink_before_demoting_the_old() -> None:
    m = MetricScheme()
    assert plan_metric_changes({"wired": 50, "lte": 600}, "lte", m) == [
        MetricChange("lte", 49), MetricChange("wired", 100), MetricChange("lte", 50)]
    # Nothing active: one step, then the others settle on their standby metrics.
    assert plan_metric_changes({"wired": 1024, "lte": 1025}, "wired", m) == [
        MetricChange("wired", 50), MetricChange("lte", 600)]
    # Already there: nothing to do.
    assert plan_metric_changes({"wired": 100, "lte": 50}, "lte", m) == []
    # An uplink without a route is not given one by a switch.
    assert plan_metric_changes({"wired": None, "lte": 600}, "lte", m) == [
        MetricChange("lte", 50)]
    # A DHCP route with metric 0 on the old uplink is beaten, then replaced.
    assert plan_metric_changes({"wired": 0, "lte": 600}, "lte", m) == [
        MetricChange("lte", 49), MetricChange("wired", 100), MetricChange("lte", 50)]
    # An interrupted switch (lte at 49, wired still at 50) completes.
    assert plan_metric_changes({"wired": 50, "lte": 49}, "lte", m) == [
        MetricChange("wired", 100), MetricChange("lte", 50)]
    assert plan_metric_changes({"wired": 50, "lte": 600}, None, m) == [
        MetricChange("wired", 100)]


def test_metric_scheme_and_uplinks_are_validated() -> None:
    with pytest.raises(RouteConfigError, match=r"metrics.wired=50: .*greater than"):
        MetricScheme(active=50, wired=50)
    with pytest.raises(RouteConfigError, match=r"metrics.lte=100: must differ"):
        MetricScheme(wired=100, lte=100)
    with pytest.raises(RouteConfigError, match=r"metrics.active=0"):
        MetricScheme(active=0)
    with pytest.raises(RouteConfigError, match=r"wired.interface='eth0; rm': may only"):
        Uplink("wired", "eth0; rm")
    with pytest.raises(RouteConfigError, match=r"longer than 15"):
        Uplink("lte", "a" * 16)
    with pytest.raises(RouteConfigError, match=r"uplink.name='wifi'"):
        Uplink("wifi", "wlan0")  # type: ignore[arg-type]
    with pytest.raises(RouteConfigError, match=r"already used by uplink 'wired'"):
        NetlinkRoutes([Uplink("wired", "eth0"), Uplink("lte", "eth0")])


# -- the kernel ----------------------------------------------------------------------

async def test_activate_lte_moves_the_default_route(shop: Shop, routes: NetlinkRoutes) -> None:
    assert isinstance(routes, RouteController)
    await routes.activate("wired")
    assert route_dev(shop.box, GATEWAY_IP) == "wan0"
    assert route_dev(shop.box, GATEWAY_IP, "from", LAN_CLIENT, "iif", "lan0") == "wan0"
    assert seen_source(shop.box, GATEWAY_IP) == WIRED_ADDR

    await routes.activate("lte")
    assert route_dev(shop.box, GATEWAY_IP) == "wwan0"
    assert route_dev(shop.box, GATEWAY_IP, "from", LAN_CLIENT, "iif", "lan0") == "wwan0"
    assert seen_source(shop.box, GATEWAY_IP) == LTE_ADDR

    # The DHCP routes were replaced by storebox's, one per uplink, gateways kept.
    routes_now = defaults(shop.box)
    assert {dev: (r["gateway"], r["metric"], r["protocol"]) for dev, r in routes_now.items()} == {
        "wwan0": (LTE_GW, 50, "83"), "wan0": (WIRED_GW, 100, "83")}


async def test_both_uplinks_keep_a_route_so_bound_probes_work(shop: Shop,
                                                              routes: NetlinkRoutes) -> None:
    await routes.activate("lte")
    metrics = {dev: r["metric"] for dev, r in defaults(shop.box).items()}
    assert metrics == {"wwan0": 50, "wan0": 100}
    # Probes bind to their interface (SO_BINDTODEVICE): both paths work.
    assert seen_source(shop.box, GATEWAY_IP, device="wan0") == WIRED_ADDR
    assert seen_source(shop.box, GATEWAY_IP, device="wwan0") == LTE_ADDR
    assert seen_source(shop.box, GATEWAY_IP) == LTE_ADDR

    state = await routes.describe()
    assert state["active"] == "lte" and state["preferred"] == "lte"
    assert state["uplinks"]["lte"]["role"] == "active"
    assert state["uplinks"]["wired"]["role"] == "standby"
    assert state["uplinks"]["wired"]["routes"][0]["gateway"] == WIRED_GW
    assert state["uplinks"]["wired"]["addresses"] == [WIRED_ADDR]
    json.dumps(state)


@pytest.mark.parametrize("first, second", [("wired", "lte"), ("lte", "wired")])
async def test_make_before_break_never_leaves_the_box_without_a_default_route(
        shop: Shop, routes: NetlinkRoutes, first: str, second: str) -> None:
    iface = {"wired": "wan0", "lte": "wwan0"}
    await routes.activate(first)  # type: ignore[arg-type]
    async with RouteWatch(shop.box) as watch:
        await routes.activate(second)  # type: ignore[arg-type]
        await watch.stop()
    states = watch.states()
    assert len(states) >= 4, watch.events  # add, add, del ... were all seen
    for i, state in enumerate(states):
        assert state, f"no default route after event {i}: {watch.events[:i]}"
        assert {k[0] for k in state} == {"wan0", "wwan0"}, (
            f"an uplink lost its route after event {i}: {watch.events[:i]}")
    # Traffic moved exactly once, from the old uplink to the new one.
    path = [preferred(s) for s in states]
    changes = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    assert changes == [iface[first], iface[second]], path
    # The first event raises the new uplink; nothing is deleted before that.
    kind, key, _ = watch.events[0]
    assert kind == "RTM_NEWROUTE" and key[0] == iface[second], watch.events
    assert states[-1] == current_defaults(shop.box)


async def test_activate_is_idempotent(shop: Shop, routes: NetlinkRoutes) -> None:
    await routes.activate("lte")
    async with RouteWatch(shop.box) as watch:
        await routes.activate("lte")
        assert await routes.ensure_present(["wired", "lte"]) == []
        await watch.stop()
    assert watch.events == []
    # Another controller (a restarted daemon) sees the same state and changes nothing.
    again = NetlinkRoutes(UPLINKS, netns=shop.box)
    try:
        async with RouteWatch(shop.box) as watch:
            assert await again.ensure_present(["wired", "lte"]) == []
            assert (await again.describe())["active"] == "lte"
            await again.activate("lte")
            await watch.stop()
        assert watch.events == []
    finally:
        await again.close()


async def test_deactivate_all_keeps_standby_routes(shop: Shop, routes: NetlinkRoutes) -> None:
    await routes.activate("lte")
    await routes.deactivate_all()
    assert {d: r["metric"] for d, r in defaults(shop.box).items()} == {"wan0": 100, "wwan0": 600}
    state = await routes.describe()
    assert state["active"] is None
    assert {n: u["role"] for n, u in state["uplinks"].items()} == {
        "wired": "standby", "lte": "standby"}
    # Probes still reach the internet through either uplink.
    assert seen_source(shop.box, GATEWAY_IP, device="wwan0") == LTE_ADDR


async def test_ensure_present_repairs_a_dhcp_route_that_came_back(shop: Shop,
                                                                  routes: NetlinkRoutes) -> None:
    await routes.activate("lte")
    # The wired DHCP client renews and re-adds its route, with metric 0.
    ipn(shop.box, "route", "add", "default", "via", WIRED_GW, "dev", "wan0", "proto", "dhcp",
        "metric", "0")
    assert route_dev(shop.box, GATEWAY_IP) == "wan0"
    assert await routes.ensure_present(["wired", "lte"]) == []
    assert route_dev(shop.box, GATEWAY_IP) == "wwan0"
    assert {d: r["metric"] for d, r in defaults(shop.box).items()} == {"wan0": 100, "wwan0": 50}


async def test_ensure_present_restores_a_metric_changed_behind_its_back(
        shop: Shop, routes: NetlinkRoutes) -> None:
    """The maintenance pass reads the kernel once when all is in place (no writes, see
    test_activate_is_idempotent); a route that is not as it should be takes the full
    path."""
    await routes.activate("wired")
    lte = defaults(shop.box)["wwan0"]
    ipn(shop.box, "route", "del", "default", "dev", "wwan0", "metric", str(lte["metric"]))
    ipn(shop.box, "route", "add", "default", "via", lte["gateway"], "dev", "wwan0",
        "proto", "83", "metric", "700")
    assert await routes.ensure_present(["wired", "lte"]) == []
    assert {d: r["metric"] for d, r in defaults(shop.box).items()} == {"wan0": 50, "wwan0": 600}


async def test_gateway_follows_a_new_dhcp_lease(shop: Shop, routes: NetlinkRoutes) -> None:
    await routes.activate("wired")
    ipn(shop.isp_wired, "addr", "add", "10.1.0.254/24", "dev", "cust0")
    ipn(shop.box, "route", "add", "default", "via", "10.1.0.254", "dev", "wan0",
        "proto", "dhcp", "metric", "1024")
    assert await routes.ensure_present(["wired", "lte"]) == []
    wan = defaults(shop.box)["wan0"]
    assert (wan["gateway"], wan["metric"], wan["protocol"]) == ("10.1.0.254", 50, "83")
    assert seen_source(shop.box, GATEWAY_IP) == WIRED_ADDR


async def test_uplink_without_a_gateway_is_unavailable_and_nothing_changes(
        shop: Shop, routes: NetlinkRoutes) -> None:
    await routes.activate("wired")
    ipn(shop.box, "route", "del", "default", "dev", "wwan0")
    before = current_defaults(shop.box)
    with pytest.raises(UplinkUnavailableError, match=r"uplink 'lte' \('wwan0'\).*no gateway"):
        await routes.activate("lte")
    assert current_defaults(shop.box) == before
    problems = await routes.ensure_present(["wired", "lte"])
    assert [(p.uplink, p.interface) for p in problems] == [("lte", "wwan0")]
    assert "no gateway" in problems[0].reason
    assert route_dev(shop.box, GATEWAY_IP) == "wan0"
    with pytest.raises(RouteConfigError, match=r"uplink='wifi'"):
        await routes.activate("wifi")  # type: ignore[arg-type]


async def test_point_to_point_lte_gets_a_device_route() -> None:
    with build_shop(lte_point_to_point=True) as shop:
        # The modem's OS setup installed a gateway-less device route; remove even that:
        # a point-to-point link needs no gateway to be learnt.
        ipn(shop.box, "route", "del", "default", "dev", "wwan0")
        routes = NetlinkRoutes(UPLINKS, netns=shop.box)
        try:
            await routes.activate("lte")
            lte = defaults(shop.box)["wwan0"]
            assert "gateway" not in lte and lte["scope"] == "link" and lte["metric"] == 50
            assert seen_source(shop.box, GATEWAY_IP) == LTE_ADDR
            await routes.activate("wired")
            assert seen_source(shop.box, GATEWAY_IP) == WIRED_ADDR
            assert seen_source(shop.box, GATEWAY_IP, device="wwan0") == LTE_ADDR
        finally:
            await routes.close()


async def test_ipv6_default_routes_follow(shop6: Shop) -> None:
    routes = NetlinkRoutes(UPLINKS, netns=shop6.box)
    try:
        await routes.activate("lte")
        assert route_dev(shop6.box, "2001:db8:ffff::1") == "wwan0"
        six = {d: r["metric"] for d, r in defaults(shop6.box, "-6").items()}
        assert six == {"wwan0": 50, "wan0": 100}
        await routes.activate("wired")
        assert route_dev(shop6.box, "2001:db8:ffff::1") == "wan0"
    finally:
        await routes.close()


async def test_one_socket_serves_concurrent_callers(shop: Shop) -> None:
    # The kernel refuses a second dump on a socket while one runs (EBUSY): the engine's
    # maintenance and a late conntrack flush share the flusher's socket, for example.
    netlink = Netlink(shop.box)
    try:
        states = await asyncio.gather(*(netlink.state() for _ in range(20)))
        assert all("wan0" in s.links and s.defaults[socket.AF_INET] for s in states)
    finally:
        await netlink.close()


async def test_default_gateways_are_read_as_ip_route_shows_them(shop: Shop) -> None:
    """What the LAN forwarding's modem guard reads every 10 s (no `ip` spawned)."""
    netlink = Netlink(shop.box)
    try:
        assert await netlink.default_gateways("wwan0") == [LTE_GW]
        ipn(shop.box, "route", "add", "default", "via", "10.2.0.9", "dev", "wwan0",
            "metric", "900")
        assert sorted(await netlink.default_gateways("wwan0")) == sorted([LTE_GW, "10.2.0.9"])
        assert await netlink.default_gateways("wan0") == [WIRED_GW]
        ipn(shop.box, "route", "del", "default", "dev", "wwan0", "metric", "900")
        ipn(shop.box, "route", "del", "default", "via", LTE_GW, "dev", "wwan0")
        assert await netlink.default_gateways("wwan0") == []
        assert await netlink.default_gateways("nosuch0") == []
    finally:
        await netlink.close()
