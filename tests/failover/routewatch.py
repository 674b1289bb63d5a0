"""Watch a namespace's IPv4 default routes change, event by event (rtnetlink multicast)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)

from tests.failover.conftest import ipn

SENTINEL = "10.250.250.0/24"
NLM_F_REPLACE = 0x100

Key = tuple[str, int, str | None]  # (interface, metric, gateway)


@dataclass
class RouteWatch:
    """Subscribe first, then snapshot; `stop()` adds a sentinel route and waits until it
    has been seen, so every event caused before `stop()` is in `events`."""

    ns: str
    initial: set[Key] = field(default_factory=set)
    events: list[tuple[str, Key, int]] = field(default_factory=list)
    _ipr: Any = None
    _task: asyncio.Task[None] | None = None
    _names: dict[int, str] = field(default_factory=dict)

    async def __aenter__(self) -> RouteWatch:
        self._ipr = AsyncIPRoute(netns=self.ns, flags=0)
        await self._ipr.bind(groups=RTMGRP_IPV4_ROUTE)
        links = json.loads(ipn(self.ns, "-j", "link", "show").stdout)
        self._names = {int(link["ifindex"]): link["ifname"] for link in links}
        self.initial = current_defaults(self.ns)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            async for msg in self._ipr.get():
                kind = msg["event"]
                if kind not in ("RTM_NEWROUTE", "RTM_DELROUTE") or msg.get("table") != 254:
                    continue
                if msg["dst_len"] == 24 and msg.get("dst") == SENTINEL.split("/")[0]:
                    return
                if msg["dst_len"] != 0:
                    continue
                key = (self._names.get(msg.get("oif"), str(msg.get("oif"))),
                       int(msg.get("priority") or 0), msg.get("gateway"))
                self.events.append((kind, key, int(msg["header"]["flags"])))

    async def stop(self) -> None:
        ipn(self.ns, "route", "add", SENTINEL, "dev", "lo")
        assert self._task is not None
        async with asyncio.timeout(5):
            await self._task
        ipn(self.ns, "route", "del", SENTINEL, "dev", "lo")

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._ipr.close()

    def states(self) -> list[set[Key]]:
        """The set of default routes after each event, starting with the snapshot."""
        state = set(self.initial)
        states = [set(state)]
        for kind, key, flags in self.events:
            if kind == "RTM_NEWROUTE":
                if flags & NLM_F_REPLACE:
                    state = {k for k in state if k[1] != key[1]}
                state.add(key)
            else:
                state.discard(key)
            states.append(set(state))
        return states


def current_defaults(ns: str) -> set[Key]:
    routes = json.loads(ipn(ns, "-j", "route", "show", "default").stdout)
    return {(r["dev"], int(r.get("metric", 0)), r.get("gateway")) for r in routes}


def preferred(state: set[Key]) -> str | None:
    return min(state, key=lambda k: k[1])[0] if state else None


@dataclass
class LinkWatch:
    """Records link and address events in a namespace. A flap shows up as a link losing
    IFF_UP/IFF_LOWER_UP, a RTM_DELLINK, or an address removed. `stop()` adds a sentinel
    address to lo and waits for it."""

    ns: str
    links: list[tuple[str, str, int]] = field(default_factory=list)  # (event, ifname, flags)
    addresses: list[tuple[str, str, str]] = field(default_factory=list)  # (event, ifname, ip)
    _ipr: Any = None
    _task: asyncio.Task[None] | None = None
    _names: dict[int, str] = field(default_factory=dict)

    async def __aenter__(self) -> LinkWatch:
        self._ipr = AsyncIPRoute(netns=self.ns, flags=0)
        await self._ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        links = json.loads(ipn(self.ns, "-j", "link", "show").stdout)
        self._names = {int(link["ifindex"]): link["ifname"] for link in links}
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            async for msg in self._ipr.get():
                kind = msg["event"]
                name = self._names.get(msg.get("index"), str(msg.get("index")))
                if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
                    self.links.append((kind, name, int(msg["flags"])))
                    continue
                address = str(msg.get("address"))
                if kind == "RTM_NEWADDR" and address == "127.0.0.99":
                    return
                self.addresses.append((kind, name, address))

    async def stop(self) -> None:
        ipn(self.ns, "addr", "add", "127.0.0.99/8", "dev", "lo")
        assert self._task is not None
        async with asyncio.timeout(5):
            await self._task
        ipn(self.ns, "addr", "del", "127.0.0.99/8", "dev", "lo")

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._ipr.close()

    def link_flaps(self, interfaces: set[str]) -> list[tuple[str, str, int]]:
        """Link removed, or seen without IFF_UP/IFF_LOWER_UP (carrier)."""
        up = 0x1 | 0x10000
        return [(kind, name, flags) for kind, name, flags in self.links
                if name in interfaces and (kind == "RTM_DELLINK" or flags & up != up)]

    def removed(self, interfaces: set[str], ipv6: bool) -> list[str]:
        """Addresses removed from `interfaces` (IPv4 or IPv6 ones)."""
        return [address for kind, name, address in self.addresses
                if kind == "RTM_DELADDR" and name in interfaces and (":" in address) == ipv6]
