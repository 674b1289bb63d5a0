"""ConntrackFlusher: after the routes moved, only the dead uplink's entries go."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from ipaddress import ip_address

import pytest

from failover.conntrack import ConntrackFlusher
from failover.errors import ConntrackError, RouteConfigError
from failover.nft import LanForwarding
from failover.routes import Uplink, switch_uplink
from failover.routes_netlink import NetlinkRoutes
from tests.failover.conftest import (
    GATEWAY_IP,
    LAN_BOX,
    LAN_CLIENT,
    LTE_ADDR,
    OTHER_IP,
    PORT,
    WIRED_ADDR,
    EchoServer,
    Shop,
    connect,
    ipn,
    sh,
)

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]
Entry = tuple[str, str, str, str]  # orig src, orig dst, reply src, reply dst


def entries(ns: str) -> set[Entry]:
    """TCP conntrack entries to/from the test port, as (orig src, orig dst, reply src,
    reply dst)."""
    out = sh("ip", "netns", "exec", ns, "conntrack", "-L", "-p", "tcp").stdout
    found = set()
    for line in out.splitlines():
        if f"port={PORT}" not in line:
            continue
        src = re.findall(r"src=(\S+)", line)
        dst = re.findall(r"dst=(\S+)", line)
        found.add((src[0], dst[0], src[1], dst[1]))
    return found


def echo(s: socket.socket) -> bytes:
    s.sendall(b"ping\n")
    return s.recv(64)


@pytest.fixture
async def box(shop: Shop) -> AsyncIterator[tuple[NetlinkRoutes, LanForwarding, ConntrackFlusher]]:
    routes = NetlinkRoutes(UPLINKS, netns=shop.box)
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
    flusher = ConntrackFlusher(netns=shop.box)
    yield routes, lan, flusher
    await routes.close()
    await flusher.close()


async def test_flush_removes_only_the_dead_uplinks_entries(
        shop: Shop, box: tuple[NetlinkRoutes, LanForwarding, ConntrackFlusher]) -> None:
    routes, lan, flusher = box
    lan_server = EchoServer(shop.box, [LAN_BOX])  # something on the box the POS talks to
    try:
        await switch_uplink("wired", routes=routes, forwarding=lan)
        assert await flusher.addresses_of("wan0") == [ip_address(WIRED_ADDR)]
        lan_via_wired, seen = connect(shop.client, OTHER_IP)
        assert seen == WIRED_ADDR
        probe_wired, _ = connect(shop.box, GATEWAY_IP, device="wan0")
        probe_lte, _ = connect(shop.box, GATEWAY_IP, device="wwan0")
        local, _ = connect(shop.client, LAN_BOX)

        # Routes first (and the LAN's NAT), then a flow through the new uplink.
        await switch_uplink("lte", routes=routes, forwarding=lan)
        lan_via_lte, seen = connect(shop.client, GATEWAY_IP)
        assert seen == LTE_ADDR

        before = entries(shop.box)
        dead = {e for e in before if e[3] == WIRED_ADDR}
        assert dead == {(LAN_CLIENT, OTHER_IP, OTHER_IP, WIRED_ADDR),
                        (WIRED_ADDR, GATEWAY_IP, GATEWAY_IP, WIRED_ADDR)}
        assert len(before - dead) == 3  # LAN via LTE, probe via LTE, LAN-local

        result = await flusher.flush_uplink("wan0")
        assert result.deleted == 2
        assert result.per_address == {WIRED_ADDR: 2}
        assert entries(shop.box) == before - dead

        # What is left still works; the flushed LAN flow is reset at its next packet
        # (re-NATed through LTE, unknown to the server) instead of hanging on wired.
        assert echo(lan_via_lte) == b"ping\n"
        assert echo(probe_lte) == b"ping\n"
        assert echo(local) == b"ping\n"
        with pytest.raises(ConnectionResetError):
            echo(lan_via_wired)
        # A second flush finds nothing.
        assert (await flusher.flush_uplink("wan0")).deleted == 0
        for s in (lan_via_wired, lan_via_lte, probe_wired, probe_lte, local):
            s.close()
    finally:
        lan_server.close()


async def test_switch_uplink_flushes_after_moving_routes_and_remembers_addresses(
        shop: Shop, box: tuple[NetlinkRoutes, LanForwarding, ConntrackFlusher]) -> None:
    routes, lan, flusher = box
    await switch_uplink("lte", routes=routes, forwarding=lan)
    await flusher.addresses_of("wwan0")  # the engine notes addresses while up
    on_lte, _ = connect(shop.client, OTHER_IP)
    probe_lte, _ = connect(shop.box, GATEWAY_IP, device="wwan0")
    probe_wired, _ = connect(shop.box, GATEWAY_IP, device="wan0")
    assert {e[3] for e in entries(shop.box)} == {LTE_ADDR, WIRED_ADDR}
    # The LTE link dies and loses its address before we get to flush. The kernel drops
    # the masqueraded entries itself then; those of the box's own sockets stay.
    ipn(shop.box, "addr", "flush", "dev", "wwan0")
    assert {e for e in entries(shop.box) if e[3] == LTE_ADDR} == {
        (LTE_ADDR, GATEWAY_IP, GATEWAY_IP, LTE_ADDR)}
    report = await switch_uplink("wired", routes=routes, forwarding=lan, conntrack=flusher,
                                 left=["lte"])
    assert report.active == "wired"
    assert report.flushed["lte"].deleted == 1
    assert report.flushed["lte"].per_address == {LTE_ADDR: 1}
    assert {e[3] for e in entries(shop.box)} == {WIRED_ADDR}
    assert echo(probe_wired) == b"ping\n"
    probe_lte.close()
    on_lte.close()
    probe_wired.close()


async def test_errors_are_reported(shop: Shop) -> None:
    with pytest.raises(ConntrackError, match=r"is conntrack installed"):
        await ConntrackFlusher(netns=shop.box, conntrack="/nonexistent/conntrack"
                               ).flush_addresses(["10.1.0.2"])
    flusher = ConntrackFlusher(netns=shop.box)
    with pytest.raises(RouteConfigError, match=r"address='10.1.0'"):
        await flusher.flush_addresses(["10.1.0"])
    with pytest.raises(RouteConfigError, match=r"interface='wan0 x'"):
        await flusher.flush_uplink("wan0 x")
    # Link-local and unspecified addresses are never flushed.
    assert (await flusher.flush_addresses(["fe80::1", "0.0.0.0"])).per_address == {}
    await flusher.close()
