"""Carrier events from netlink, in a namespace of their own."""

from __future__ import annotations

import asyncio
import itertools

from failover.linkwatch import CarrierEvent, LinkWatcher
from tests.support.netns import run

WAIT = 3.0


async def wait_for_event(
    watcher: LinkWatcher, wanted: CarrierEvent, seen: list[CarrierEvent]
) -> None:
    async def loop() -> None:
        async for event in watcher:
            seen.append(event)
            if event == wanted:
                return
        raise AssertionError(f"watcher ended before {wanted}; saw {seen}")

    await asyncio.wait_for(loop(), WAIT)


def link(netns: str, *args: str) -> None:
    run("ip", "-n", netns, "link", *args)


async def test_peer_down_and_up_reach_the_watcher_as_carrier_events(netns: str) -> None:
    link(netns, "add", "wan0", "type", "veth", "peer", "name", "isp0")
    link(netns, "set", "wan0", "up")
    link(netns, "set", "isp0", "up")
    seen: list[CarrierEvent] = []
    async with LinkWatcher(["wan0", "wwan0"], netns=netns) as watcher:
        # the initial report: every watched interface once, missing ones as no carrier
        first = [await asyncio.wait_for(anext(watcher), WAIT) for _ in range(2)]
        assert sorted(first) == [("wan0", True), ("wwan0", False)]
        assert watcher.carrier("wan0") is True

        link(netns, "set", "isp0", "down")  # the far end goes away; wan0 stays admin-up
        await wait_for_event(watcher, CarrierEvent("wan0", False), seen)
        assert watcher.carrier("wan0") is False

        link(netns, "set", "isp0", "up")
        await wait_for_event(watcher, CarrierEvent("wan0", True), seen)

        # the modem's interface appears later, with carrier
        link(netns, "add", "wwan0", "type", "veth", "peer", "name", "wwan0p")
        link(netns, "set", "wwan0p", "up")
        link(netns, "set", "wwan0", "up")
        await wait_for_event(watcher, CarrierEvent("wwan0", True), seen)

        # an interface that disappears has no carrier
        link(netns, "del", "wan0")
        await wait_for_event(watcher, CarrierEvent("wan0", False), seen)

    # only changes are reported, and only for watched interfaces
    assert all(e.ifname in ("wan0", "wwan0") for e in seen)
    assert all(a != b for a, b in itertools.pairwise(seen) if a.ifname == b.ifname)


async def test_closing_ends_the_iteration(netns: str) -> None:
    link(netns, "add", "wan0", "type", "veth", "peer", "name", "isp0")
    watcher = LinkWatcher(["wan0"], netns=netns)
    await watcher.open()
    assert await asyncio.wait_for(anext(watcher), WAIT) == ("wan0", False)  # admin down

    async def drain() -> list[CarrierEvent]:
        return [e async for e in watcher]

    task = asyncio.ensure_future(drain())
    await watcher.close()
    assert await asyncio.wait_for(task, WAIT) == []
    await watcher.close()  # idempotent
