"""Shared netlink reads (`failover.netlink_reads`) against a real kernel: within a scope a
dump is read once for every socket, a write reads again, and nothing outside the scope
(another task, a socket that opted out) sees the shared copy."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from failover import netlink_reads
from failover.routes_netlink import Netlink
from tests.failover.conftest import LTE_GW, Shop, ipn

EXTRA_GW = "10.2.0.9"


@pytest.fixture
async def sockets(shop: Shop) -> AsyncIterator[tuple[Netlink, Netlink, Netlink]]:
    """Two sharing sockets (as routes and sticky have) and one that opted out."""
    pair = (Netlink(shop.box), Netlink(shop.box), Netlink(shop.box, share=False))
    yield pair
    for netlink in pair:
        await netlink.close()


def add_extra_route(shop: Shop) -> None:
    """A default route added behind the daemon's back (another process)."""
    ipn(shop.box, "route", "add", "default", "via", EXTRA_GW, "dev", "wwan0", "metric", "900")


async def read_then_change(shop: Shop, netlink: Netlink) -> None:
    """Read LTE's gateways (in a scope: shared from now on), then add a route outside."""
    assert await netlink.default_gateways("wwan0") == [LTE_GW]
    add_extra_route(shop)


async def test_a_scope_reads_each_dump_once_for_every_socket(
        shop: Shop, sockets: tuple[Netlink, Netlink, Netlink]) -> None:
    first, second, polling = sockets
    with netlink_reads.shared_reads():
        await read_then_change(shop, first)
        # the other socket shares the first's read; the opted-out one reads the kernel
        assert await second.default_gateways("wwan0") == [LTE_GW]
        assert sorted(await polling.default_gateways("wwan0")) == sorted([LTE_GW, EXTRA_GW])
    # outside the scope: the kernel as it is now
    assert sorted(await first.default_gateways("wwan0")) == sorted([LTE_GW, EXTRA_GW])


async def test_a_write_through_any_socket_makes_the_scope_read_again(
        shop: Shop, sockets: tuple[Netlink, Netlink, Netlink]) -> None:
    first, second, _ = sockets
    with netlink_reads.shared_reads():
        await read_then_change(shop, first)
        await second.route("del", dst="0.0.0.0/0", gateway=EXTRA_GW, oif=_index(shop),
                           priority=900, family=socket.AF_INET)
        add_extra_route(shop)
        assert sorted(await first.default_gateways("wwan0")) == sorted([LTE_GW, EXTRA_GW])


async def test_other_tasks_read_the_kernel_during_a_scope(
        shop: Shop, sockets: tuple[Netlink, Netlink, Netlink]) -> None:
    first, second, _ = sockets
    outside = asyncio.Event()
    seen: list[list[str]] = []

    async def switch() -> None:  # a switch beside the maintenance pass
        await outside.wait()
        seen.append(sorted(await second.default_gateways("wwan0")))

    task = asyncio.create_task(switch())  # started before the scope: not in it
    with netlink_reads.shared_reads():
        await read_then_change(shop, first)
        outside.set()
        await asyncio.wait_for(task, 10)
        assert await first.default_gateways("wwan0") == [LTE_GW]
    assert seen == [sorted([LTE_GW, EXTRA_GW])]


def _index(shop: Shop) -> int:
    out = ipn(shop.box, "-o", "link", "show", "wwan0").stdout
    return int(out.split(":", 1)[0])
