"""Sticky uplinks for LAN flows: policy routing for the flows `failover.nft` marks.

A LAN flow keeps the uplink it started on until the engine flushes it (as OpenWrt's
mwan3 does). `failover.nft` records the uplink a flow was masqueraded through in its
conntrack mark and copies it into the packet mark of the flow's LAN packets, before
the routing decision (bits `FLOW_MARK_MASK`: wired `0x100`, LTE `0x200`). This module
routes those packets:

- per uplink a routing table (`DEFAULT_TABLES`: wired 2001, LTE 2002) holding a copy
  of that uplink's default route from the main table: gateway and device, or the
  device alone for a point-to-point uplink (raw-IP LTE has no gateway), IPv4 and, when
  the uplink has one, IPv6;
- per uplink and family two rules, only while that table holds a route::

      10100: from all fwmark 0x200/0xff00 lookup main suppress_prefixlength 0 proto 83
      10101: from all fwmark 0x200/0xff00 lookup 2002 proto 83

  The first keeps every specific route of the main table (the LAN, a VPN, connected
  networks) for marked packets and only skips its default routes; the second gives
  them the uplink's default route. Unmarked packets (new flows, the box's own) never
  match and follow the main table, where the active uplink's metric wins.

The copy follows the main table: `sync()` runs after every switch and in the engine's
maintenance loop (a DHCP renewal may bring a new gateway; the route backends repair
the main table, the next sync copies it). When the main table has no default route on
an uplink for a moment (a NetworkManager reapply, DHCP between leases) while its link
is up with an address, the last copy is kept; when the link is gone or down, the
kernel has dropped the copy itself and the rules go too, so marked packets fall back
to the main table.

What storebox changes here: only routes carrying its protocol (`RTPROT_STOREBOX`, 83)
in the sticky tables, and rules carrying that protocol at the sticky priorities (the
steer rules of `failover.steering` have a priority of their own). The tables
and their ids belong to storebox (choose other ids when 2001/2002 are taken). Both
route backends leave them alone: NetworkManager (1.42) manages the main table and the
rules it configured itself, nothing else. `remove()` deletes them all (the daemon
does on exit); without them the marks are inert.

Ending the stickiness is the flush's job (`failover.conntrack`): a flushed flow's
next packet makes a new, unmarked conntrack entry that follows the main table.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from failover.errors import RouteConfigError, RouteError, UplinkUnavailableError
from failover.routes import Uplink, UplinkName, uplink_map
from failover.routes_netlink import (
    RT_SCOPE_LINK,
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTPROT_STOREBOX,
    KernelState,
    Netlink,
    next_hop,
)

FLOW_MARK_MASK = 0xFF00
FLOW_MARKS: dict[UplinkName, int] = {"wired": 0x100, "lte": 0x200}
DEFAULT_TABLES: dict[UplinkName, int] = {"wired": 2001, "lte": 2002}
DEFAULT_PRIORITY = 10100  # and DEFAULT_PRIORITY + 1
TABLE_METRIC = 1024  # what IPv6 makes of 0 anyway; the table holds one route per family
_RESERVED_TABLES = frozenset({0, 253, 254, 255})  # unspec, default, main, local
_MAX_RULE_PRIORITY = 32765  # 32766 is the main table's rule
_FAMILIES = (int(socket.AF_INET), int(socket.AF_INET6))
_FAMILY_NAMES: dict[int, str] = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}


@dataclass(frozen=True, order=True)
class TableRoute:
    """A default route in one of the sticky tables (`gateway` None: a device route)."""

    family: int
    table: int
    oif: int
    gateway: str | None

    def as_dict(self, names: Mapping[int, str]) -> dict[str, Any]:
        return {"family": _FAMILY_NAMES.get(self.family, str(self.family)),
                "table": self.table, "interface": names.get(self.oif, self.oif),
                "gateway": self.gateway}


@dataclass(frozen=True, order=True)
class StickyRule:
    """`ip rule` `fwmark FWMARK/MASK lookup TABLE` (`suppress_prefixlength` 0: the main
    table without its default routes)."""

    family: int
    priority: int
    fwmark: int
    mask: int
    table: int
    suppress_prefixlength: int | None = None

    def as_dict(self) -> dict[str, Any]:
        text = f"fwmark {self.fwmark:#x}/{self.mask:#x} lookup "
        text += "main" if self.table == RT_TABLE_MAIN else str(self.table)
        if self.suppress_prefixlength is not None:
            text += f" suppress_prefixlength {self.suppress_prefixlength}"
        return {"family": _FAMILY_NAMES.get(self.family, str(self.family)),
                "priority": self.priority, "rule": text}


@dataclass(frozen=True)
class StickyState:
    """storebox's routes (in tables other than main) and rules, as the kernel has them,
    or as they should be."""

    routes: frozenset[TableRoute]
    rules: frozenset[StickyRule]


@dataclass(frozen=True)
class StickyChanges:
    """What `sync` does, in this order: routes replaced, rules added, then rules and
    routes deleted (a rule never points at a table before its route is in place)."""

    replace: tuple[TableRoute, ...] = ()
    add_rules: tuple[StickyRule, ...] = ()
    delete_rules: tuple[StickyRule, ...] = ()
    delete: tuple[TableRoute, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.replace or self.add_rules or self.delete_rules or self.delete)


def check_tables(tables: Mapping[UplinkName, int], uplinks: Iterable[UplinkName]) -> None:
    """RouteConfigError unless every uplink has its own usable table id."""
    seen: dict[int, UplinkName] = {}
    for name in uplinks:
        if name not in tables:
            raise RouteConfigError("sticky.tables", dict(tables), f"no table for {name!r}")
        table = tables[name]
        if isinstance(table, bool) or not isinstance(table, int) \
                or not 0 < table <= 0xFFFFFFFF or table in _RESERVED_TABLES:
            raise RouteConfigError(f"sticky.tables.{name}", table,
                                   "must be a routing table id from 1 to 4294967295, "
                                   "not 253 (default), 254 (main) or 255 (local)")
        if table in seen:
            raise RouteConfigError(f"sticky.tables.{name}", table,
                                   f"already the table of {seen[table]!r}")
        seen[table] = name


def rules_for(route: TableRoute, mark: int, priority: int) -> list[StickyRule]:
    """The two rules that send packets marked `mark` through `route`'s table."""
    return [StickyRule(route.family, priority, mark, FLOW_MARK_MASK, RT_TABLE_MAIN, 0),
            StickyRule(route.family, priority + 1, mark, FLOW_MARK_MASK, route.table)]


def plan_sticky(state: KernelState, current: StickyState,
                uplinks: Mapping[UplinkName, Uplink], tables: Mapping[UplinkName, int], *,
                priority: int = DEFAULT_PRIORITY, families: Sequence[int] = _FAMILIES,
                protocol: int = RTPROT_STOREBOX) -> StickyState:
    """What the sticky tables and rules should hold, from the kernel's main table
    (`state`) and what storebox installed before (`current`). See the module docs."""
    routes: set[TableRoute] = set()
    rules: set[StickyRule] = set()
    for name, uplink in uplinks.items():
        table = tables[name]
        link = state.links.get(uplink.interface)
        if link is None or not link.up:
            continue  # the kernel has dropped the copy itself; nothing to route through
        for family in families:
            try:
                hop = next_hop(state, uplink, family, protocol, "sticky")
            except UplinkUnavailableError:
                hop = None
            if hop is not None:
                route: TableRoute | None = TableRoute(family, table, link.index, hop.gateway)
            elif link.global_addresses(family):
                # no default route in main for a moment: keep the last copy
                route = min((r for r in current.routes if r.family == family
                             and r.table == table and r.oif == link.index), default=None)
            else:
                route = None
            if route is not None:
                routes.add(route)
                rules.update(rules_for(route, FLOW_MARKS[name], priority))
    return StickyState(frozenset(routes), frozenset(rules))


def plan_changes(current: StickyState, wanted: StickyState) -> StickyChanges:
    """The changes that turn `current` into `wanted`."""
    replace = tuple(sorted(wanted.routes - current.routes))
    slots = {(r.family, r.table) for r in replace}
    return StickyChanges(
        replace=replace,
        add_rules=tuple(sorted(wanted.rules - current.rules)),
        delete_rules=tuple(sorted(current.rules - wanted.rules)),
        # the old route of a table that gets a new one is replaced in place
        delete=tuple(sorted(r for r in current.routes - wanted.routes
                            if (r.family, r.table) not in slots)))


def _route_from_msg(msg: Any, protocol: int) -> TableRoute | None:
    if msg["dst_len"] != 0 or msg["type"] != RTN_UNICAST or int(msg["proto"]) != protocol:
        return None
    table = msg.get("table")
    table = int(table if table is not None else msg["table"])
    oif = msg.get("oif")
    if table in _RESERVED_TABLES or oif is None or msg.get("multipath"):
        return None
    gateway = msg.get("gateway")
    return TableRoute(int(msg["family"]), table, int(oif),
                      str(gateway) if gateway is not None else None)


def _rule_from_msg(msg: Any, protocol: int) -> StickyRule | None:
    if msg.get("protocol") != protocol:
        return None
    table = msg.get("table")
    suppress = msg.get("suppress_prefixlen")
    return StickyRule(
        family=int(msg["family"]), priority=int(msg.get("priority") or 0),
        fwmark=int(msg.get("fwmark") or 0), mask=int(msg.get("fwmask") or 0),
        table=int(table if table is not None else msg["table"]),
        suppress_prefixlength=None if suppress in (None, 0xFFFFFFFF) else int(suppress))


class StickyRoutes:
    """Keeps the sticky tables and rules in line with the main table. See module docs."""

    def __init__(self, uplinks: Iterable[Uplink], *,
                 tables: Mapping[UplinkName, int] | None = None,
                 priority: int = DEFAULT_PRIORITY, netns: str | None = None,
                 families: Iterable[int] = _FAMILIES, protocol: int = RTPROT_STOREBOX,
                 netlink: Netlink | None = None) -> None:
        self.uplinks: Mapping[UplinkName, Uplink] = uplink_map(uplinks)
        self.tables: dict[UplinkName, int] = dict(tables if tables is not None
                                                  else DEFAULT_TABLES)
        check_tables(self.tables, self.uplinks)
        if isinstance(priority, bool) or not isinstance(priority, int) \
                or not 0 < priority < _MAX_RULE_PRIORITY:
            raise RouteConfigError("sticky.priority", priority,
                                   f"must be from 1 to {_MAX_RULE_PRIORITY - 1} "
                                   "(it and the next one are used)")
        self.priority = priority
        self.families = tuple(families)
        if not self.families or not set(self.families) <= set(_FAMILIES):
            raise RouteConfigError("families", self.families, "must be AF_INET and/or AF_INET6")
        self.protocol = protocol
        self.netlink = netlink or Netlink(netns)
        self._owns_netlink = netlink is None
        self._lock = asyncio.Lock()

    async def current(self) -> StickyState:
        """storebox's routes in the sticky tables and its rules of the sticky priorities, as
        the kernel has them (the steer rules, ``failover.steering``, are not ours)."""
        tables = set(self.tables.values())
        priorities = (self.priority, self.priority + 1)
        routes: set[TableRoute] = set()
        rules: set[StickyRule] = set()
        for family in self.families:
            for msg in await self.netlink.dump("route", family=family):
                route = _route_from_msg(msg, self.protocol)
                if route is not None and route.table in tables:
                    routes.add(route)
            for msg in await self.netlink.dump("rule", family=family):
                rule = _rule_from_msg(msg, self.protocol)
                if rule is not None and rule.priority in priorities:
                    rules.add(rule)
        return StickyState(frozenset(routes), frozenset(rules))

    async def sync(self) -> StickyChanges:
        """Copy every uplink's default route into its table and keep the rules in step;
        returns what changed (nothing, usually)."""
        async with self._lock:
            current = await self.current()
            state = await self.netlink.state(self.families)
            wanted = plan_sticky(state, current, self.uplinks, self.tables,
                                 priority=self.priority, families=self.families,
                                 protocol=self.protocol)
            changes = plan_changes(current, wanted)
            await self._apply(changes)
            return changes

    async def remove(self) -> StickyChanges:
        """Delete every sticky rule and route (marked flows follow the main table)."""
        async with self._lock:
            current = await self.current()
            changes = plan_changes(current, StickyState(frozenset(), frozenset()))
            await self._apply(changes)
            return changes

    async def describe(self) -> dict[str, Any]:
        state = await self.current()
        names = (await self.netlink.state(())).names
        return {"tables": dict(self.tables), "mark_mask": f"{FLOW_MARK_MASK:#x}",
                "marks": {n: f"{FLOW_MARKS[n]:#x}" for n in self.uplinks},
                "routes": [r.as_dict(names) for r in sorted(state.routes)],
                "rules": [r.as_dict() for r in sorted(state.rules)]}

    async def close(self) -> None:
        """Release the netlink socket; the tables and rules stay (see `remove`)."""
        if self._owns_netlink:
            await self.netlink.close()

    async def _apply(self, changes: StickyChanges) -> None:
        for route in changes.replace:
            await self._call("replace", self._route_spec(route), route.table)
        for rule in changes.add_rules:
            await self._call("add", self._rule_spec(rule), rule.table, rule=True)
        for rule in changes.delete_rules:
            await self._call("del", self._rule_spec(rule), rule.table, rule=True)
        for route in changes.delete:
            await self._call("del", self._route_spec(route, delete=True), route.table)

    def _route_spec(self, route: TableRoute, delete: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {"family": route.family, "dst_len": 0, "table": route.table,
                                "oif": route.oif, "priority": TABLE_METRIC,
                                "proto": self.protocol, "type": RTN_UNICAST}
        if route.gateway is not None:
            spec["gateway"] = route.gateway
            spec["scope"] = RT_SCOPE_UNIVERSE
        else:
            spec["scope"] = RT_SCOPE_LINK
        if delete:
            spec["scope"] = RT_SCOPE_NOWHERE  # match any scope
            del spec["priority"]  # whatever metric it has
        return spec

    def _rule_spec(self, rule: StickyRule) -> dict[str, Any]:
        spec: dict[str, Any] = {"family": rule.family, "priority": rule.priority,
                                "fwmark": rule.fwmark, "fwmask": rule.mask,
                                "table": rule.table, "protocol": self.protocol}
        if rule.suppress_prefixlength is not None:
            spec["suppress_prefixlen"] = rule.suppress_prefixlength
        return spec

    async def _call(self, command: str, spec: dict[str, Any], table: int,
                    rule: bool = False) -> None:
        try:
            if rule:
                await self.netlink.rule(command, **spec)
            else:
                await self.netlink.route(command, **spec)
        except NetlinkError as exc:
            if command == "del" and exc.code in (errno.ENOENT, errno.ESRCH):
                return  # gone already (the kernel drops routes of a link that went down)
            if command == "add" and exc.code == errno.EEXIST:
                return
            what = "rule" if rule else "route"
            reason = exc.args[1] if len(exc.args) > 1 else exc
            raise RouteError("sticky", None, None,
                             f"{command} {what} in table {table}: kernel refused: {reason}"
                             ) from exc


__all__ = ["DEFAULT_PRIORITY", "DEFAULT_TABLES", "FLOW_MARKS", "FLOW_MARK_MASK",
           "StickyChanges", "StickyRoutes", "StickyRule", "StickyState", "TableRoute",
           "check_tables", "plan_changes", "plan_sticky", "rules_for"]
