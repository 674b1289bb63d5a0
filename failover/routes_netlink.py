"""Route control over netlink (pyroute2's asyncio API): kernel default routes, no `ip`.

Where the gateway comes from
    storebox never configures addresses or gateways (docs/config.md). Each uplink's next
    hop is learnt from the default route the OS (DHCP client, ModemManager, ...)
    installed on that interface, preferring it over storebox's own copy so that a new
    gateway after a lease change is picked up. A point-to-point uplink (PPP, raw-IP
    QMI/MBIM `wwan0`, an address with a peer, IFF_POINTOPOINT/IFF_NOARP) gets a
    device route without a gateway, exactly like the OS's own. With no OS route and
    no point-to-point link, the uplink is unavailable (UplinkUnavailableError): there
    is nothing to route to yet.

What storebox changes
    Only default routes in the main table on the managed interfaces. Its own routes
    carry protocol `RTPROT_STOREBOX` (83; `ip route` shows "proto 83"). Once storebox's
    route on an uplink is in place, every other default route on that interface (the
    DHCP client's, with whatever metric it chose) is removed, because a DHCP route
    with metric 0 would otherwise beat the active uplink. A DHCP client that re-adds
    its route at renewal is repaired by the next `ensure_present`.

One metric change is make-before-break: the route with the new metric is added
(or atomically replaces a route of this interface with the same metric) before the
old one is deleted. `failover.routes.plan_metric_changes` orders the changes across
uplinks. IPv6 default routes are handled the same way when the OS installed one
(IPv6 is optional; IPv4 is required).

All netlink I/O runs on the event loop through `pyroute2.AsyncIPRoute` (never blocks
it). `netns=` targets a named network namespace (tests); pyroute2 then forks once to
open the socket there.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

from failover import netlink_reads
from failover.errors import RouteConfigError, RouteError, UplinkUnavailableError
from failover.routes import (
    MetricScheme,
    RouteProblem,
    Uplink,
    UplinkName,
    plan_metric_changes,
    uplink_map,
    uplink_name,
)

RTPROT_STOREBOX = 83
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTNH_F_LINKDOWN = 0x10
IFF_UP = 0x1
IFF_POINTOPOINT = 0x10
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000
ARPHRD_PPP = 512
ARPHRD_RAWIP = 519
ARPHRD_NONE = 0xFFFE
_PTP_TYPES = frozenset({ARPHRD_PPP, ARPHRD_RAWIP, ARPHRD_NONE})
_FAMILY_NAMES: dict[int, str] = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}


@dataclass(frozen=True)
class DefaultRoute:
    """One default route in the main table, as the kernel reports it."""

    family: int
    oif: int | None
    gateway: str | None
    metric: int
    protocol: int
    linkdown: bool
    multipath: bool

    def as_dict(self, links: Mapping[int, str], own_protocol: int) -> dict[str, Any]:
        return {"family": _FAMILY_NAMES.get(self.family, str(self.family)),
                "interface": links.get(self.oif, None) if self.oif is not None else None,
                "gateway": self.gateway, "metric": self.metric,
                "owner": "storebox" if self.protocol == own_protocol else "os",
                "protocol": self.protocol, "linkdown": self.linkdown,
                "multipath": self.multipath}


@dataclass(frozen=True)
class Address:
    family: int
    local: str
    peer: str | None
    prefixlen: int
    scope: int


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    flags: int
    link_type: int
    addresses: tuple[Address, ...]

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def carrier(self) -> bool:
        return bool(self.flags & IFF_LOWER_UP)

    @property
    def point_to_point(self) -> bool:
        if self.flags & (IFF_POINTOPOINT | IFF_NOARP) or self.link_type in _PTP_TYPES:
            return True
        return any(a.peer is not None for a in self.addresses if a.family == socket.AF_INET)

    def global_addresses(self, family: int | None = None) -> list[str]:
        return [a.local for a in self.addresses
                if a.scope == RT_SCOPE_UNIVERSE and (family is None or a.family == family)]


@dataclass(frozen=True)
class KernelState:
    links: dict[str, Link]
    defaults: dict[int, list[DefaultRoute]]

    @property
    def names(self) -> dict[int, str]:
        return {link.index: name for name, link in self.links.items()}

    def defaults_on(self, family: int, index: int) -> list[DefaultRoute]:
        """Single-path default routes out of interface `index`, best first."""
        return sorted((r for r in self.defaults.get(family, [])
                       if r.oif == index and not r.multipath), key=lambda r: r.metric)

    def best_metric(self, family: int, index: int) -> int | None:
        routes = self.defaults_on(family, index)
        return routes[0].metric if routes else None


def _route_from_msg(msg: Any) -> DefaultRoute | None:
    if msg["dst_len"] != 0 or msg["type"] != RTN_UNICAST:
        return None
    table = msg.get("table")
    if (table if table is not None else msg["table"]) != RT_TABLE_MAIN:
        return None
    multipath = msg.get("multipath")
    priority = msg.get("priority")
    gateway = msg.get("gateway")
    oif = msg.get("oif")
    return DefaultRoute(family=int(msg["family"]), oif=int(oif) if oif is not None else None,
                        gateway=str(gateway) if gateway is not None else None,
                        metric=int(priority) if priority is not None else 0,
                        protocol=int(msg["proto"]),
                        linkdown=bool(msg["flags"] & RTNH_F_LINKDOWN),
                        multipath=bool(multipath))


class Netlink:
    """One rtnetlink socket (lazily opened) in the current or a named namespace.

    Requests are serialised: the kernel refuses a second dump on a socket while one
    runs (EBUSY), and callers share sockets (the engine's maintenance and a late
    conntrack flush, `describe` during a switch)."""

    def __init__(self, netns: str | None = None, *, share: bool = True) -> None:
        self.netns = netns
        # share=False: always read the kernel, even in a `shared_reads()` scope (a reader
        # that polls for a change made elsewhere: NetworkManager's settle)
        self.share = share
        self._ipr: Any = None
        self._lock = asyncio.Lock()
        self._io = asyncio.Lock()

    async def _socket(self) -> Any:
        async with self._lock:
            if self._ipr is None:
                kwargs: dict[str, Any] = {"groups": 0}
                if self.netns is not None:
                    # flags=0: never create a namespace that is not there.
                    kwargs.update(netns=self.netns, flags=0)
                ipr = AsyncIPRoute(**kwargs)
                await ipr.setup_endpoint()
                self._ipr = ipr
            return self._ipr

    async def _dump(self, what: str, **spec: Any) -> list[Any]:
        """A dump's messages; within `netlink_reads.shared_reads()` read once a scope
        (unless a write came since: see that module). Callers only read them."""
        memo = netlink_reads.shared() if self.share else None
        if memo is None:
            return await self._read(what, **spec)
        key = (self.netns, what, tuple(sorted(spec.items())))
        hit = memo.get(key)
        if hit is not None and hit[0] == netlink_reads.writes():
            return list(hit[1])
        generation = netlink_reads.writes()
        messages = await self._read(what, **spec)
        memo[key] = (generation, messages)
        return list(messages)

    async def _read(self, what: str, **spec: Any) -> list[Any]:
        ipr = await self._socket()
        async with self._io:
            for _ in range(5):
                try:
                    return [m async for m in await getattr(ipr, what)("dump", **spec)]
                except NetlinkDumpInterrupted:
                    continue
            return [m async for m in await getattr(ipr, what)("dump", **spec)]

    async def state(self, families: Iterable[int] = (socket.AF_INET, socket.AF_INET6)
                    ) -> KernelState:
        """Links with their addresses, and the main table's default routes."""
        addresses: dict[int, list[Address]] = {}
        for msg in await self._dump("addr"):
            local = msg.get("local")
            address = msg.get("address")
            if local is None:
                local = address
            if local is None:
                continue
            peer = address if address is not None and address != local else None
            addresses.setdefault(int(msg["index"]), []).append(Address(
                family=int(msg["family"]), local=str(local),
                peer=str(peer) if peer is not None else None,
                prefixlen=int(msg["prefixlen"]), scope=int(msg["scope"])))
        links: dict[str, Link] = {}
        for msg in await self._dump("link"):
            name = msg.get("ifname")
            if name is None:
                continue
            index = int(msg["index"])
            links[str(name)] = Link(index=index, name=str(name), flags=int(msg["flags"]),
                                    link_type=int(msg["ifi_type"]),
                                    addresses=tuple(addresses.get(index, ())))
        defaults: dict[int, list[DefaultRoute]] = {}
        for family in families:
            routes = []
            for msg in await self._dump("route", family=family):
                route = _route_from_msg(msg)
                if route is not None:
                    routes.append(route)
            defaults[family] = routes
        return KernelState(links=links, defaults=defaults)

    async def route(self, command: str, **spec: Any) -> None:
        await self._write("route", command, spec)

    async def rule(self, command: str, **spec: Any) -> None:
        await self._write("rule", command, spec)

    async def _write(self, what: str, command: str, spec: dict[str, Any]) -> None:
        ipr = await self._socket()
        netlink_reads.bump_writes()
        try:
            async with self._io:
                await getattr(ipr, what)(command, **spec)
        finally:
            netlink_reads.bump_writes()

    async def default_gateways(self, interface: str) -> list[str]:
        """The gateways of `interface`'s default routes in the main table, IPv4 then IPv6
        (what `ip route show default dev IFACE` lists; multipath and device routes have
        none); [] when there is no such interface."""
        index = next((int(m["index"]) for m in await self._dump("link")
                      if m.get("ifname") == interface), None)
        found: list[str] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in await self._dump("route", family=family):
                route = _route_from_msg(msg)
                if route is not None and index is not None and route.oif == index \
                        and route.gateway is not None:
                    found.append(route.gateway)
        return found

    async def dump(self, what: str, **spec: Any) -> list[Any]:
        """Raw netlink messages of a dump (`what`: "route", "rule", "addr", "link")."""
        return await self._dump(what, **spec)

    async def close(self) -> None:
        async with self._lock:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None


@dataclass(frozen=True)
class NextHop:
    gateway: str | None  # None: a device route (point-to-point uplink)


def next_hop(state: KernelState, uplink: Uplink, family: int, own_protocol: int,
             operation: str) -> NextHop | None:
    """Where `uplink`'s default route must point, learnt from the kernel. None for IPv6
    when the OS installed no IPv6 default route (nothing to do); raises
    UplinkUnavailableError when IPv4 cannot be routed out of the uplink."""
    link = state.links.get(uplink.interface)
    if link is None:
        raise UplinkUnavailableError(operation, uplink.name, uplink.interface,
                                     "the interface does not exist")
    if not link.up:
        raise UplinkUnavailableError(operation, uplink.name, uplink.interface,
                                     "the interface is administratively down")
    routes = state.defaults_on(family, link.index)
    # The OS's route is the authority on the gateway (it follows DHCP); ours next.
    routes.sort(key=lambda r: (r.protocol == own_protocol, r.metric))
    if routes:
        return NextHop(routes[0].gateway)
    if family != socket.AF_INET:
        return None
    if not link.global_addresses(socket.AF_INET):
        raise UplinkUnavailableError(operation, uplink.name, uplink.interface,
                                     "no IPv4 address yet (DHCP not done?)")
    if link.point_to_point:
        return NextHop(None)
    raise UplinkUnavailableError(
        operation, uplink.name, uplink.interface,
        "no gateway known: the OS (DHCP) installed no default route on it")


class MetricRouteControl:
    """What both backends share: the `RouteController` methods as metric changes planned
    by `plan_metric_changes`, applied one uplink at a time under one lock. A backend
    sets the attributes below and implements `_activate_locked` and `_set_metric`."""

    uplinks: Mapping[UplinkName, Uplink]
    metrics: MetricScheme
    netlink: Netlink
    _lock: asyncio.Lock
    _active: UplinkName | None
    _decided: bool  # activate()/deactivate_all() called since start

    async def _activate_locked(self, name: UplinkName) -> None:
        raise NotImplementedError

    async def _set_metric(self, operation: str, name: UplinkName, metric: int) -> None:
        raise NotImplementedError

    async def activate(self, uplink: UplinkName) -> None:
        name = self._managed(uplink)
        async with self._lock:
            await self._activate_locked(name)
            self._active, self._decided = name, True

    async def deactivate_all(self) -> None:
        async with self._lock:
            state = await self.netlink.state((socket.AF_INET,))
            for step in plan_metric_changes(self._current(state), None, self.metrics):
                await self._set_metric("deactivate_all", step.uplink, step.metric)
            self._active, self._decided = None, True

    async def ensure_present(self, uplinks: Iterable[UplinkName]) -> list[RouteProblem]:
        names = [self._managed(u) for u in uplinks]
        problems: list[RouteProblem] = []
        async with self._lock:
            for name in names:
                try:
                    if name == self._active:
                        await self._activate_locked(name)
                        continue
                    want = self.metrics.standby(name)
                    if not self._decided:
                        # Restarted: keep an uplink the kernel still prefers as it is
                        # until the engine decides again.
                        state = await self.netlink.state((socket.AF_INET,))
                        metric = self._current(state)[name]
                        if metric in (self.metrics.active, self.metrics.switching):
                            want = metric
                    await self._set_metric("ensure_present", name, want)
                except RouteError as exc:
                    problems.append(RouteProblem(name, self.uplinks[name].interface,
                                                 exc.reason))
        return problems

    def _managed(self, uplink: object) -> UplinkName:
        name = uplink_name(uplink)
        if name not in self.uplinks:
            raise RouteConfigError("uplink", uplink, "is not managed by this controller")
        return name

    def _current(self, state: KernelState) -> dict[UplinkName, int | None]:
        current: dict[UplinkName, int | None] = {}
        for name, uplink in self.uplinks.items():
            link = state.links.get(uplink.interface)
            current[name] = state.best_metric(socket.AF_INET, link.index) if link else None
        return current


class NetlinkRoutes(MetricRouteControl):
    """`RouteController` over kernel netlink. See the module docstring."""

    backend = "netlink"

    def __init__(self, uplinks: Iterable[Uplink], metrics: MetricScheme | None = None, *,
                 netns: str | None = None,
                 families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
                 protocol: int = RTPROT_STOREBOX) -> None:
        self.uplinks: Mapping[UplinkName, Uplink] = uplink_map(uplinks)
        self.metrics = metrics or MetricScheme()
        self.families = tuple(families)
        if socket.AF_INET not in self.families or not set(self.families) <= set(_FAMILY_NAMES):
            raise RouteConfigError("families", self.families,
                                   "must hold AF_INET and optionally AF_INET6")
        if not 5 <= protocol <= 255:
            raise RouteConfigError("protocol", protocol,
                                   "must be a routing protocol number between 5 and 255")
        self.protocol = protocol
        self.netlink = Netlink(netns)
        self._lock = asyncio.Lock()
        self._active: UplinkName | None = None
        self._decided = False  # activate()/deactivate_all() called since start

    # -- RouteController --------------------------------------------------------------

    async def describe(self) -> dict[str, Any]:
        state = await self.netlink.state(self.families)
        names = state.names
        managed = {u.interface for u in self.uplinks.values()}
        uplinks: dict[str, Any] = {}
        for name, uplink in self.uplinks.items():
            link = state.links.get(uplink.interface)
            routes = ([r.as_dict(names, self.protocol)
                       for family in self.families for r in state.defaults_on(family, link.index)]
                      if link is not None else [])
            metric = state.best_metric(socket.AF_INET, link.index) if link else None
            uplinks[name] = {
                "interface": uplink.interface, "exists": link is not None,
                "up": link.up if link else False, "carrier": link.carrier if link else False,
                "addresses": link.global_addresses() if link else [],
                "role": self.metrics.role(name, metric), "metric": metric, "routes": routes}
        v4 = sorted(state.defaults.get(socket.AF_INET, []), key=lambda r: r.metric)
        preferred = None
        if v4:
            interface = names.get(v4[0].oif) if v4[0].oif is not None else None
            preferred = next((n for n, u in self.uplinks.items() if u.interface == interface),
                             interface)
        active = self._active
        if not self._decided:
            active = next((n for n in self.uplinks if uplinks[n]["role"] == "active"), None)
        return {"backend": self.backend, "active": active, "preferred": preferred,
                "metrics": self.metrics.as_dict(), "uplinks": uplinks,
                "other_defaults": [r.as_dict(names, self.protocol)
                                   for family in self.families
                                   for r in state.defaults.get(family, [])
                                   if r.multipath or names.get(r.oif or -1) not in managed]}

    async def close(self) -> None:
        await self.netlink.close()

    async def ensure_present(self, uplinks: Iterable[UplinkName]) -> list[RouteProblem]:
        names = [self._managed(u) for u in uplinks]
        # The engine's maintenance backstop (every 10 s) nearly always finds every route
        # as it should be: one read of the kernel says so, where the full path reads it
        # once per uplink and family (~13 ms of CPU each time on a small box, a quarter
        # of the idle daemon's). Anything else takes the full path, which also reports.
        if self._decided and set(names) == set(self.uplinks) and await self._settled(names):
            return []
        return await super().ensure_present(names)

    # -- internals --------------------------------------------------------------------

    async def _settled(self, names: list[UplinkName]) -> bool:
        """Whether every one of `names` already has exactly the default routes
        `_set_family_metric` would leave (read-only)."""
        async with self._lock:
            state = await self.netlink.state(self.families)
        try:
            for name in names:
                uplink = self.uplinks[name]
                metric = (self.metrics.active if name == self._active
                          else self.metrics.standby(name))
                for family in self.families:
                    hop = next_hop(state, uplink, family, self.protocol, "ensure_present")
                    if hop is None:
                        continue
                    mine = state.defaults_on(family, state.links[uplink.interface].index)
                    if [(r.metric, r.gateway, r.protocol) for r in mine] \
                            != [(metric, hop.gateway, self.protocol)]:
                        return False
        except RouteError:
            return False
        return True

    async def _activate_locked(self, name: UplinkName) -> None:
        state = await self.netlink.state((socket.AF_INET,))
        # Refuse before touching anything when the target cannot carry a route.
        next_hop(state, self.uplinks[name], socket.AF_INET, self.protocol, "activate")
        steps = plan_metric_changes(self._current(state), name, self.metrics)
        for step in steps:
            await self._set_metric("activate", step.uplink, step.metric)
        if not steps:
            # Already preferred: still follow a new gateway, drop a re-added DHCP route.
            await self._set_metric("activate", name, self.metrics.active)

    async def _set_metric(self, operation: str, name: UplinkName, metric: int) -> None:
        for family in self.families:
            await self._set_family_metric(operation, self.uplinks[name], family, metric)

    async def _set_family_metric(self, operation: str, uplink: Uplink, family: int,
                                 metric: int) -> None:
        """Make `metric` the only default-route metric on `uplink` (this family):
        add (or replace a same-metric route of this interface), then delete the rest."""
        attempts = 3
        for attempt in range(attempts):
            state = await self.netlink.state((family,))
            hop = next_hop(state, uplink, family, self.protocol, operation)
            if hop is None:
                return
            link = state.links[uplink.interface]
            mine = state.defaults_on(family, link.index)
            keep = next((r for r in mine if r.metric == metric and r.gateway == hop.gateway
                         and r.protocol == self.protocol), None)
            try:
                if keep is None:
                    clash = [r for r in state.defaults.get(family, [])
                             if r.metric == metric and (r.oif != link.index or r.multipath)]
                    if clash:
                        other = state.names.get(clash[0].oif or -1, "a multipath route")
                        raise RouteError(operation, uplink.name, uplink.interface,
                                         f"metric {metric} is already taken by a default "
                                         f"route on {other!r}")
                    replace = any(r.metric == metric for r in mine)
                    await self.netlink.route("replace" if replace else "add",
                                             **self._spec(family, link.index, metric, hop))
                for route in mine:
                    if route is keep or route.metric == metric:
                        continue  # the kept route, or the one just replaced
                    await self._delete(family, route)
                return
            except NetlinkError as exc:
                if exc.code in (errno.EEXIST, errno.ESRCH) and attempt < attempts - 1:
                    continue  # the table moved under us (DHCP); look again
                reason = f"kernel refused: {exc.args[1] if len(exc.args) > 1 else exc}"
                if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                                errno.ENODEV):
                    raise UplinkUnavailableError(operation, uplink.name, uplink.interface,
                                                 reason) from exc
                raise RouteError(operation, uplink.name, uplink.interface, reason) from exc

    def _spec(self, family: int, index: int, metric: int, hop: NextHop) -> dict[str, Any]:
        spec: dict[str, Any] = {"family": family, "dst_len": 0, "table": RT_TABLE_MAIN,
                                "oif": index, "priority": metric, "proto": self.protocol,
                                "type": RTN_UNICAST}
        if hop.gateway is None:
            spec["scope"] = RT_SCOPE_LINK
        else:
            spec["gateway"] = hop.gateway
            spec["scope"] = RT_SCOPE_UNIVERSE
        return spec

    async def _delete(self, family: int, route: DefaultRoute) -> None:
        spec: dict[str, Any] = {"family": family, "dst_len": 0, "table": RT_TABLE_MAIN,
                                "oif": route.oif, "priority": route.metric,
                                "proto": route.protocol,
                                # NOWHERE: match any scope (a device route is scope link).
                                "scope": RT_SCOPE_NOWHERE}
        if route.gateway is not None:
            spec["gateway"] = route.gateway
        try:
            await self.netlink.route("del", **spec)
        except NetlinkError as exc:
            if exc.code != errno.ESRCH:
                raise


__all__ = ["RTPROT_STOREBOX", "DefaultRoute", "KernelState", "Link", "Netlink", "NetlinkRoutes",
           "NextHop", "next_hop"]
