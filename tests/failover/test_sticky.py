"""Sticky uplinks: a LAN flow keeps the uplink it started on until it is flushed.

Planning (pure) and the kernel side in a shop of namespaces: the policy routes of
`failover.sticky` with the flow marks of `failover.nft`, moved by `switch_uplink`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator

import pytest

from failover.conntrack import ConntrackFlusher
from failover.errors import RouteConfigError
from failover.nft import LanForwarding
from failover.routes import Uplink, UplinkName, switch_uplink
from failover.routes_netlink import (
    RTPROT_STOREBOX,
    DefaultRoute,
    KernelState,
    Link,
    NetlinkRoutes,
)
from failover.routes_netlink import Address as LinkAddress
from failover.sticky import (
    FLOW_MARK_MASK,
    StickyChanges,
    StickyRoutes,
    StickyRule,
    StickyState,
    TableRoute,
    check_tables,
    plan_changes,
    plan_sticky,
)
from tests.failover.conftest import (
    GATEWAY_IP,
    LTE_ADDR,
    LTE_GW,
    LTE_GW6,
    PORT,
    WIRED_ADDR,
    WIRED_GW,
    WIRED_GW6,
    Shop,
    connect,
    ipn,
    sh,
)
from tests.failover.enginelab import echo

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]
BY_NAME = {u.name: u for u in UPLINKS}
TABLES: dict[UplinkName, int] = {"wired": 2001, "lte": 2002}
V4, V6 = int(socket.AF_INET), int(socket.AF_INET6)
IFF_UP_RUNNING = 0x1 | 0x10000
DHCP, RA = 16, 9

# --------------------------------------------------------------------------- planning


def link(index: int, name: str, *addresses: str, flags: int = IFF_UP_RUNNING,
         ptp: bool = False) -> Link:
    return Link(index, name, flags | (0x10 if ptp else 0), 1, tuple(
        LinkAddress(V6 if ":" in a else V4, a, None, 64 if ":" in a else 24, 0)
        for a in addresses))


def default(family: int, oif: int, gateway: str | None, metric: int,
            protocol: int = DHCP) -> DefaultRoute:
    return DefaultRoute(family, oif, gateway, metric, protocol, False, False)


def kernel(wired: Link | None, lte: Link | None, *routes: DefaultRoute) -> KernelState:
    links = {x.name: x for x in (wired, lte) if x is not None}
    return KernelState(links, {V4: [r for r in routes if r.family == V4],
                               V6: [r for r in routes if r.family == V6]})


NOTHING = StickyState(frozenset(), frozenset())
WAN = link(2, "wan0", WIRED_ADDR)
WWAN = link(3, "wwan0", LTE_ADDR)


def rules(family: int, mark: int, table: int) -> set[StickyRule]:
    return {StickyRule(family, 10100, mark, 0xFF00, 254, 0),
            StickyRule(family, 10101, mark, 0xFF00, table)}


def test_each_uplink_gets_a_copy_of_its_default_route_and_two_rules() -> None:
    state = kernel(WAN, WWAN,
                   default(V4, 2, WIRED_GW, 50, RTPROT_STOREBOX),  # ours, active
                   default(V4, 2, WIRED_GW, 1024),  # the DHCP client's
                   default(V4, 3, LTE_GW, 600, RTPROT_STOREBOX))
    wanted = plan_sticky(state, NOTHING, BY_NAME, TABLES)
    assert wanted.routes == {TableRoute(V4, 2001, 2, WIRED_GW), TableRoute(V4, 2002, 3, LTE_GW)}
    assert wanted.rules == rules(V4, 0x100, 2001) | rules(V4, 0x200, 2002)
    changes = plan_changes(NOTHING, wanted)
    assert set(changes.replace) == wanted.routes and set(changes.add_rules) == wanted.rules
    assert not changes.delete and not changes.delete_rules
    assert not plan_changes(wanted, wanted)  # in step: nothing to do
    assert not plan_changes(wanted, plan_sticky(state, wanted, BY_NAME, TABLES))


def test_ipv6_only_where_the_uplink_has_an_ipv6_default_route() -> None:
    wan = link(2, "wan0", WIRED_ADDR, "2001:db8:1::2")
    state = kernel(wan, WWAN, default(V4, 2, WIRED_GW, 100), default(V4, 3, LTE_GW, 600),
                   default(V6, 2, WIRED_GW6, 1024, RA))
    wanted = plan_sticky(state, NOTHING, BY_NAME, TABLES)
    assert {r for r in wanted.routes if r.family == V6} == {TableRoute(V6, 2001, 2, WIRED_GW6)}
    assert {r for r in wanted.rules if r.family == V6} == rules(V6, 0x100, 2001)
    # not asked for IPv6: none
    only4 = plan_sticky(state, NOTHING, BY_NAME, TABLES, families=(V4,))
    assert {r.family for r in only4.routes} | {r.family for r in only4.rules} == {V4}


def test_a_point_to_point_lte_link_gets_a_device_route() -> None:
    wwan = link(3, "wwan0", LTE_ADDR, ptp=True)
    # the modem manager's device route, or none yet: a device route either way
    for routes in ([default(V4, 3, None, 1025)], []):
        state = kernel(WAN, wwan, default(V4, 2, WIRED_GW, 100), *routes)
        wanted = plan_sticky(state, NOTHING, BY_NAME, TABLES)
        assert TableRoute(V4, 2002, 3, None) in wanted.routes


def test_a_new_gateway_replaces_the_copy_in_place() -> None:
    before = StickyState(frozenset({TableRoute(V4, 2001, 2, WIRED_GW)}),
                         frozenset(rules(V4, 0x100, 2001)))
    state = kernel(WAN, None, default(V4, 2, "10.1.0.254", 1024),
                   default(V4, 2, WIRED_GW, 50, RTPROT_STOREBOX))
    # The OS's route is the authority on the gateway (DHCP renewed with a new one).
    changes = plan_changes(before, plan_sticky(state, before, {"wired": BY_NAME["wired"]},
                                               TABLES))
    assert changes == StickyChanges(replace=(TableRoute(V4, 2001, 2, "10.1.0.254"),))


def test_a_main_table_without_the_route_for_a_moment_keeps_the_copy() -> None:
    # NetworkManager reapplying, DHCP between leases: link up, address there, no route
    before = StickyState(frozenset({TableRoute(V4, 2002, 3, LTE_GW)}),
                         frozenset(rules(V4, 0x200, 2002)))
    state = kernel(WAN, WWAN, default(V4, 2, WIRED_GW, 50))
    wanted = plan_sticky(state, before, BY_NAME, TABLES)
    assert TableRoute(V4, 2002, 3, LTE_GW) in wanted.routes
    assert rules(V4, 0x200, 2002) <= wanted.rules
    # ...but never invents one (no copy before, no gateway known)
    assert all(r.table != 2002 for r in plan_sticky(state, NOTHING, BY_NAME, TABLES).routes)


@pytest.mark.parametrize("lte", [None, link(3, "wwan0", LTE_ADDR, flags=0),
                                 link(3, "wwan0")], ids=["gone", "down", "no-address"])
def test_a_link_gone_down_or_without_address_loses_copy_and_rules(lte: Link | None) -> None:
    before = StickyState(frozenset({TableRoute(V4, 2001, 2, WIRED_GW),
                                    TableRoute(V4, 2002, 3, LTE_GW)}),
                         frozenset(rules(V4, 0x100, 2001) | rules(V4, 0x200, 2002)))
    state = kernel(WAN, lte, default(V4, 2, WIRED_GW, 50))
    changes = plan_changes(before, plan_sticky(state, before, BY_NAME, TABLES))
    assert changes == StickyChanges(delete_rules=tuple(sorted(rules(V4, 0x200, 2002))),
                                    delete=(TableRoute(V4, 2002, 3, LTE_GW),))


def test_changes_never_leave_a_rule_without_its_route() -> None:
    # the order of `StickyChanges` (routes replaced, rules added, rules then routes
    # deleted) is what `StickyRoutes` applies
    before = StickyState(frozenset({TableRoute(V4, 2002, 3, LTE_GW),
                                    TableRoute(V4, 2002, 3, "10.2.0.254"),
                                    TableRoute(V4, 2009, 3, LTE_GW)}),  # an old table id
                         frozenset(rules(V4, 0x200, 2009)))
    wanted = StickyState(frozenset({TableRoute(V4, 2002, 3, LTE_GW)}),
                         frozenset(rules(V4, 0x200, 2002)))
    changes = plan_changes(before, wanted)
    assert changes.replace == ()
    # the "main without defaults" rule is the same for both tables: it stays
    assert changes.add_rules == (StickyRule(V4, 10101, 0x200, 0xFF00, 2002),)
    assert changes.delete_rules == (StickyRule(V4, 10101, 0x200, 0xFF00, 2009),)
    assert set(changes.delete) == {TableRoute(V4, 2002, 3, "10.2.0.254"),
                                   TableRoute(V4, 2009, 3, LTE_GW)}
    # everything goes
    gone = plan_changes(before, NOTHING)
    assert set(gone.delete) == before.routes and set(gone.delete_rules) == before.rules


@pytest.mark.parametrize("tables, message", [
    ({"wired": 2001}, r"no table for 'lte'"),
    ({"wired": 254, "lte": 2002}, r"sticky.tables.wired=254: .*main"),
    ({"wired": 2001, "lte": 0}, r"sticky.tables.lte=0"),
    ({"wired": 2001, "lte": 2 ** 32}, r"sticky.tables.lte=4294967296"),
    ({"wired": 2001, "lte": True}, r"sticky.tables.lte=True"),
    ({"wired": 2001, "lte": 2001}, r"already the table of 'wired'"),
])
def test_table_ids_are_checked(tables: dict[UplinkName, int], message: str) -> None:
    with pytest.raises(RouteConfigError, match=message):
        check_tables(tables, ["wired", "lte"])
    with pytest.raises(RouteConfigError, match=message):
        StickyRoutes(UPLINKS, tables=tables)


@pytest.mark.parametrize("priority", [0, 32765, -1, True])
def test_rule_priority_is_checked(priority: int) -> None:
    with pytest.raises(RouteConfigError, match=r"sticky.priority"):
        StickyRoutes(UPLINKS, priority=priority)


def test_the_marks_fit_the_mask() -> None:
    from failover.sticky import FLOW_MARKS
    assert all(mark & ~FLOW_MARK_MASK == 0 and mark for mark in FLOW_MARKS.values())
    assert len(set(FLOW_MARKS.values())) == len(FLOW_MARKS)


# --------------------------------------------------------------------------- in namespaces


class Box:
    def __init__(self, shop: Shop) -> None:
        self.routes = NetlinkRoutes(UPLINKS, netns=shop.box)
        self.lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
        self.flusher = ConntrackFlusher(netns=shop.box)
        self.sticky = StickyRoutes(UPLINKS, netns=shop.box)

    async def switch(self, target: UplinkName, left: list[UplinkName],
                     flush: list[UplinkName]) -> None:
        """What the engine does: switch, flush what must go now, sync the tables."""
        await switch_uplink(target, routes=self.routes, forwarding=self.lan,
                            conntrack=self.flusher, left=left, flush=flush)
        await self.sticky.sync()

    async def close(self) -> None:
        await self.sticky.remove()
        await self.sticky.close()
        await self.routes.close()
        await self.flusher.close()


@pytest.fixture
async def box(shop: Shop) -> AsyncIterator[Box]:
    b = Box(shop)
    yield b
    await b.close()


def flows(ns: str) -> dict[int, tuple[str, int]]:
    """The LAN client's TCP flows to the test port: source port -> (reply dst, ct mark)."""
    out = sh("ip", "netns", "exec", ns, "conntrack", "-L", "-p", "tcp").stdout
    found = {}
    for line in out.splitlines():
        if f"dport={PORT}" in line and "src=192.168.50.10" in line:
            sport = int(re.findall(r"sport=(\d+)", line)[0])
            found[sport] = (re.findall(r"dst=(\S+)", line)[1],
                            int(re.findall(r"mark=(\d+)", line)[0]))
    return found


def lan_connect(shop: Shop) -> tuple[socket.socket, str, int]:
    s, seen = connect(shop.client, GATEWAY_IP)
    return s, seen, s.getsockname()[1]


async def test_a_flow_opened_on_lte_keeps_it_across_a_failback_until_the_flush(
        shop: Shop, box: Box) -> None:
    await box.switch("lte", [], [])
    old, seen, port = lan_connect(shop)
    assert seen == LTE_ADDR
    assert flows(shop.box)[port] == (LTE_ADDR, 0x200)
    # Failback to a healthy wired line: LTE is left healthy, flushed later (grace).
    await box.switch("wired", ["lte"], [])
    assert await echo(old) == b"ping\n"  # still through LTE (killed without stickiness)
    assert flows(shop.box)[port] == (LTE_ADDR, 0x200)
    new, seen, _ = lan_connect(shop)
    assert seen == WIRED_ADDR  # new flows follow the main table
    assert await echo(new) == b"ping\n"
    # The late flush ends the stickiness: the old flow's next packet makes a new,
    # unmarked entry routed through wired, and the server resets it.
    result = await box.flusher.flush_uplink("wwan0")
    assert result.per_address.get(LTE_ADDR, 0) >= 1
    assert port not in flows(shop.box)
    with pytest.raises(ConnectionResetError):
        await echo(old)
    assert await echo(new) == b"ping\n"
    for s in (old, new):
        s.close()


async def test_without_the_policy_routes_the_failback_resets_the_flow(
        shop: Shop, box: Box) -> None:
    """The bug the stickiness fixes: a flow masqueraded through LTE, routed out of wired
    after the move, is dropped by the NAT (output interface changed) and reset."""
    await box.switch("lte", [], [])
    await box.sticky.remove()
    old, seen, _ = lan_connect(shop)
    assert seen == LTE_ADDR
    await switch_uplink("wired", routes=box.routes, forwarding=box.lan, conntrack=box.flusher,
                        left=["lte"], flush=[])
    with pytest.raises(ConnectionResetError):
        await echo(old)
    old.close()


async def test_failover_with_wired_dead_moves_its_flows_to_lte_at_once(
        shop: Shop, box: Box) -> None:
    await box.switch("wired", [], [])
    old, seen, port = lan_connect(shop)
    assert seen == WIRED_ADDR and flows(shop.box)[port] == (WIRED_ADDR, 0x100)
    ipn(shop.isp_wired, "link", "set", "cust0", "down")  # wired dies (carrier lost)
    # A dead uplink left is flushed right after the route move: nothing stays pinned.
    await box.switch("lte", ["wired"], ["wired"])
    assert port not in flows(shop.box)
    new, seen, _ = lan_connect(shop)
    assert seen == LTE_ADDR
    # The old flow's next packet follows the main table (LTE) and is reset at once,
    # instead of going down the dead line until it times out.
    with pytest.raises(ConnectionResetError):
        await echo(old, timeout=2.0)
    for s in (old, new):
        s.close()


async def test_sync_follows_the_main_table_and_remove_leaves_others_alone(
        shop6: Shop) -> None:
    shop = shop6
    # someone else's rule and table (another protocol): never touched
    ipn(shop.box, "rule", "add", "fwmark", "0x7", "lookup", "77", "pref", "10100")
    ipn(shop.box, "route", "add", "default", "via", WIRED_GW, "dev", "wan0", "table", "77")
    routes = NetlinkRoutes(UPLINKS, netns=shop.box)
    sticky = StickyRoutes(UPLINKS, netns=shop.box)
    try:
        await routes.activate("wired")
        await routes.ensure_present(["lte"])
        changes = await sticky.sync()
        assert len(changes.replace) == 4 and len(changes.add_rules) == 8
        assert not await sticky.sync()
        table = ipn(shop.box, "route", "show", "table", "2001").stdout
        assert f"default via {WIRED_GW} dev wan0 proto 83" in table
        assert f"default via {LTE_GW6} dev wwan0 proto 83" in ipn(
            shop.box, "-6", "route", "show", "table", "2002").stdout
        v4rules = ipn(shop.box, "rule").stdout
        assert ("10100:\tfrom all fwmark 0x200/0xff00 lookup main suppress_prefixlength 0 "
                "proto 83") in v4rules
        assert "10101:\tfrom all fwmark 0x200/0xff00 lookup 2002 proto 83" in v4rules
        assert "10101:\tfrom all fwmark 0x100/0xff00 lookup 2001 proto 83" in ipn(
            shop.box, "-6", "rule").stdout
        # What a marked packet gets: its uplink's route, but the LAN stays the LAN.
        assert "dev wwan0" in ipn(shop.box, "route", "get", GATEWAY_IP, "mark", "0x200").stdout
        assert "dev wan0" in ipn(shop.box, "route", "get", GATEWAY_IP, "mark", "0x10100").stdout
        assert "dev lan0" in ipn(shop.box, "route", "get", "192.168.50.10", "mark",
                                 "0x200").stdout
        assert "dev wan0" in ipn(shop.box, "route", "get", GATEWAY_IP).stdout
        # DHCP renews with a new gateway: route control repairs main, sync copies it.
        ipn(shop.box, "route", "replace", "default", "via", "10.2.0.254", "dev", "wwan0",
            "proto", "dhcp", "metric", "1025")
        await routes.ensure_present(["lte"])
        changes = await sticky.sync()
        assert changes.replace == (TableRoute(V4, 2002, changes.replace[0].oif, "10.2.0.254"),)
        assert "default via 10.2.0.254 dev wwan0" in ipn(
            shop.box, "route", "show", "table", "2002").stdout
        # The LTE link goes down: the kernel drops its routes, sync drops the rules.
        ipn(shop.box, "link", "set", "wwan0", "down")
        changes = await sticky.sync()
        assert {r.table for r in changes.delete_rules} == {254, 2002}
        assert "0x200" not in ipn(shop.box, "rule").stdout
        assert "lookup 2001" in ipn(shop.box, "rule").stdout
        # remove: every route and rule of ours, nothing else
        await sticky.remove()
        assert await sticky.current() == StickyState(frozenset(), frozenset())
        assert "proto 83" not in ipn(shop.box, "rule").stdout
        assert "proto 83" not in ipn(shop.box, "-6", "rule").stdout
        assert "10100:\tfrom all fwmark 0x7 lookup 77" in ipn(shop.box, "rule").stdout
        assert f"default via {WIRED_GW} dev wan0" in ipn(
            shop.box, "route", "show", "table", "77").stdout
        assert ipn(shop.box, "route", "show", "table", "2001").stdout == ""
        assert not (await sticky.remove())
    finally:
        await sticky.close()
        await routes.close()
