"""Steering applied: the box's own traffic to the payment gateway by LTE, by policy rule.

``failover.steer`` decides; this module makes the kernel agree and keeps the books.

Rules. While steered, one rule per destination (the gateway's resolved addresses, and
``steer.destinations``)::

    10050: from all to 198.51.100.10 iif lo lookup 2002 proto 83

``iif lo`` matches the box's own connections only (the payments client, the
forwarder, the POS API's outbound): the shop's LAN traffic keeps the main table and
wired, and the LAN forwarding (``failover.nft``) is not touched. Table 2002 is LTE's
table of ``failover.sticky`` (a copy of LTE's default route); it is written here too
(the same route, replaced in place) so that steering works without the sticky tables.
A socket bound to a device (the probes) does not match another device's route and
falls through to the main table: the wired probes keep measuring wired while
steered. The rules carry storebox's protocol (83) and their own priority, which the
sticky tables' sync leaves alone.

Connections. A kept-alive connection to the gateway opened over wired has wired's
source address; once the rule moves its packets to LTE they cannot be answered. They
are closed (``ss -K``, the kernel's socket destroy) when the rules change either way,
so the next request opens a new one on the new path -- except when steering ends
because of a failover: the main table then goes by LTE too and they keep working.

Budget. Steered bytes are LTE bytes: while steered, LTE's interface counters are read
every ``account_interval_s`` and what moved (probes included, a slight over-count) is
charged to the LTE budget (``failover.budget.LteBudget.account_steered``), so standby
probing slows when steering spends the month's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from failover.budget import LteBudget
from failover.errors import RouteConfigError, RouteError, UplinkUnavailableError
from failover.link import LinkState, LinkStatus, Monotonic, RoundOutcome
from failover.link import Uplink as Choice
from failover.probes.keep import KEPT_KINDS
from failover.probes.round import RoundResult
from failover.routes import Uplink
from failover.routes_netlink import (
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RTN_UNICAST,
    RTPROT_STOREBOX,
    Netlink,
    next_hop,
)
from failover.steer import SteerChange, SteerPolicy
from failover.sticky import DEFAULT_TABLES, TABLE_METRIC

__all__ = ["STEER_PRIORITY", "Destinations", "SteerRoutes", "SteerRouting", "Steering",
           "parse_destinations"]

log = logging.getLogger("failover.steering")

STEER_PRIORITY = 10050  # before the sticky rules (10100/10101), after local (0)
Destinations = Callable[[], Awaitable[Sequence[str]]]


def parse_destinations(entries: Sequence[str], field: str = "steer.destinations",
                       ) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """IPs or CIDR networks; RouteConfigError naming the bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError as exc:
            raise RouteConfigError(field, entry, f"not an IP address or network: {exc}") \
                from exc
    return sorted(set(networks), key=lambda n: (n.version, n))


class SteerRouting(Protocol):
    """What ``Steering`` needs from the kernel side (``SteerRoutes``; tests fake it)."""

    async def steer(self, destinations: Sequence[str]) -> None: ...
    async def unsteer(self, close_connections: bool = True) -> None: ...
    async def lte_bytes(self) -> int | None: ...


@dataclass(frozen=True, order=True)
class _Rule:
    family: int
    dst: str
    dst_len: int


class SteerRoutes:
    """The steer rules and LTE's table route over netlink (module docs)."""

    def __init__(self, lte: Uplink, *, table: int = DEFAULT_TABLES["lte"],
                 priority: int = STEER_PRIORITY, netns: str | None = None,
                 protocol: int = RTPROT_STOREBOX, netlink: Netlink | None = None,
                 kill_sockets: bool = True) -> None:
        if lte.name != "lte":
            raise RouteConfigError("steer.uplink", lte.name, "steering goes by LTE")
        self.lte = lte
        self.table = table
        self.priority = priority
        self.netns = netns
        self.protocol = protocol
        self.netlink = netlink or Netlink(netns)
        self._owns_netlink = netlink is None
        self._kill_sockets = kill_sockets
        self._lock = asyncio.Lock()
        self.destinations: list[str] = []

    async def steer(self, destinations: Sequence[str]) -> None:
        """Rules for exactly ``destinations`` (IPs or CIDRs) to LTE's table."""
        wanted = {_Rule(int(socket.AF_INET6 if n.version == 6 else socket.AF_INET),
                        str(n.network_address), n.prefixlen)
                  for n in parse_destinations(destinations, "destinations")}
        async with self._lock:
            for family in sorted({r.family for r in wanted}):
                await self._table_route(family)
            current = await self._current()
            for rule in sorted(wanted - current):
                await self._rule("add", rule)
            for rule in sorted(current - wanted):
                await self._rule("del", rule)
            changed = wanted != current
            self.destinations = [f"{r.dst}/{r.dst_len}" for r in sorted(wanted)]
        if changed:
            await self._close_connections(wanted | current)

    async def unsteer(self, close_connections: bool = True) -> None:
        """No steer rules: the gateway's traffic follows the main table again.
        ``close_connections`` False: they stay (a failover moved the main table to LTE,
        where they already are)."""
        async with self._lock:
            current = await self._current()
            for rule in sorted(current):
                await self._rule("del", rule)
            self.destinations = []
        if current and close_connections:
            await self._close_connections(current)

    async def lte_bytes(self) -> int | None:
        """Bytes received and sent on LTE's interface so far (None: no such link)."""
        for msg in await self.netlink.dump("link"):
            if msg.get("ifname") != self.lte.interface:
                continue
            stats = msg.get("stats64") or msg.get("stats")
            if stats is None:
                return None
            return int(stats["rx_bytes"]) + int(stats["tx_bytes"])
        return None

    async def describe(self) -> dict[str, Any]:
        rules = await self._current()
        return {"table": self.table, "priority": self.priority,
                "rules": [f"to {r.dst}/{r.dst_len} iif lo lookup {self.table}"
                          for r in sorted(rules)]}

    async def close(self) -> None:
        if self._owns_netlink:
            await self.netlink.close()

    # -- internals

    async def _current(self) -> set[_Rule]:
        found: set[_Rule] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in await self.netlink.dump("rule", family=family):
                if msg.get("protocol") != self.protocol \
                        or int(msg.get("priority") or 0) != self.priority:
                    continue
                dst = msg.get("dst")
                if dst is not None:
                    found.add(_Rule(int(msg["family"]), str(dst), int(msg["dst_len"])))
        return found

    async def _table_route(self, family: int) -> None:
        """LTE's default route, copied into the table (as ``failover.sticky`` does)."""
        state = await self.netlink.state((family,))
        hop = next_hop(state, self.lte, family, self.protocol, "steer")
        if hop is None:
            raise UplinkUnavailableError("steer", self.lte.name, self.lte.interface,
                                         "no IPv6 default route for an IPv6 destination")
        spec: dict[str, Any] = {
            "family": family, "dst_len": 0, "table": self.table,
            "oif": state.links[self.lte.interface].index, "priority": TABLE_METRIC,
            "proto": self.protocol, "type": RTN_UNICAST}
        if hop.gateway is None:
            spec["scope"] = RT_SCOPE_LINK
        else:
            spec.update(gateway=hop.gateway, scope=RT_SCOPE_UNIVERSE)
        await self._call("route", "replace", spec)

    async def _rule(self, command: str, rule: _Rule) -> None:
        await self._call("rule", command, {
            "family": rule.family, "priority": self.priority, "dst": rule.dst,
            "dst_len": rule.dst_len, "iifname": "lo", "table": self.table,
            "protocol": self.protocol})

    async def _call(self, what: str, command: str, spec: dict[str, Any]) -> None:
        try:
            await getattr(self.netlink, what)(command, **spec)
        except NetlinkError as exc:
            if command == "del" and exc.code in (errno.ENOENT, errno.ESRCH):
                return
            if command == "add" and exc.code == errno.EEXIST:
                return
            reason = exc.args[1] if len(exc.args) > 1 else exc
            raise RouteError("steer", self.lte.name, self.lte.interface,
                             f"{command} {what} in table {self.table}: kernel refused: "
                             f"{reason}") from exc

    async def _close_connections(self, rules: set[_Rule]) -> None:
        """Destroy the box's TCP connections to the destinations (module docs)."""
        if not self._kill_sockets:
            return
        prefix = [] if self.netns is None else ["ip", "netns", "exec", self.netns]
        for rule in sorted(rules):
            args = [*prefix, "ss", "-K", "-n", "dst", f"{rule.dst}/{rule.dst_len}"]
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL)
                async with asyncio.timeout(5.0):
                    await proc.wait()
            except (OSError, TimeoutError) as exc:
                log.warning("steer: could not close connections to %s: %s", rule.dst, exc)


def lte_healthy(status: LinkStatus) -> bool:
    """LTE can take the payments: up, or degraded only by an old failure in its window
    (standby rounds are minutes apart, one failed round stays in view for long)."""
    if not status.carrier:
        return False
    return status.state is LinkState.UP or (
        status.state is LinkState.DEGRADED and status.consecutive_failures == 0)


def loss_evidence(outcome: RoundOutcome) -> tuple[int, int]:
    """(lost, exchanged) round trips of a round, as the steer's loss: the attempts of the
    probes that are a fresh exchange each time (a TCP connect, a DNS query, an ICMP
    echo), each attempt before the one that answered lost, all of a probe's attempts when
    none did (`failover.probes.retry`). That is the packet-level loss the probes' retries
    hide, the loss a payment's round trips meet: at 60 % exchange loss a 4-attempt probe
    still succeeds 87 % of the time, while 60 % of its attempts are lost
    (`failover.steer`). A kept HTTP(S) connection rides out loss by TCP resends and says
    nothing of it, so those probes count only when the round has no fresh one (then as
    the probe: one exchange, lost when it failed); their latency still counts."""
    if isinstance(outcome, RoundResult):
        fresh = [r for r in outcome.results if r.target.kind not in KEPT_KINDS]
        if fresh:
            counts = [r.exchange_loss() for r in fresh]
            return sum(lost for lost, _ in counts), sum(n for _, n in counts)
    return outcome.attempted - outcome.succeeded, outcome.attempted


class Steering:
    """The policy fed by the engine, applied by a worker task (module docs).

    ``destinations`` returns the addresses to steer (the gateway's, resolved afresh
    at every steer, plus configured ones); ``on_steer`` hears every applied change (with
    the destinations and the steered LTE bytes so far).
    The engine ``attach``es its ``LteBudget`` and error report."""

    def __init__(self, policy: SteerPolicy, routes: SteerRouting, destinations: Destinations,
                 *, on_steer: Callable[[SteerChange, list[str], int], None] | None = None,
                 account_interval_s: float = 10.0, retry_s: float = 5.0,
                 monotonic: Monotonic = time.monotonic) -> None:
        self.policy = policy
        self.routes = routes
        self._destinations = destinations
        self._on_steer = on_steer
        self._account_interval_s = account_interval_s
        self._retry_s = retry_s
        self._monotonic = monotonic
        self.budget: LteBudget | None = None
        self.report: Callable[[BaseException], None] = lambda exc: log.error("steer: %s", exc)
        self._latest: SteerChange | None = None
        self.applied: SteerChange | None = None
        self.applied_to: list[str] = []
        self.lte_bytes = 0
        self._counter: int | None = None
        self._wired_active = True
        self._wake = asyncio.Event()

    def attach(self, budget: LteBudget, report: Callable[[BaseException], None]) -> Steering:
        """The engine's LTE budget (steered bytes count) and error report."""
        self.budget, self.report = budget, report
        return self

    def add_round(self, outcome: RoundOutcome) -> None:
        failed, attempted = loss_evidence(outcome)
        self.policy.add_round(failed, attempted, outcome.median_latency_ms)

    def evaluate(self, wired: LinkStatus, lte: LinkStatus, active: Choice) -> None:
        """After every round and link change: the policy's verdict, applied by ``run``."""
        del wired  # the policy judges wired by its rounds; kept for the call's symmetry
        self._wired_active = active is Choice.WIRED
        change = self.policy.evaluate(lte_healthy=lte_healthy(lte),
                                      wired_active=active is Choice.WIRED)
        if change is not None:
            log.warning("failover: %s: %s", "steer" if change.steered else "unsteer",
                        change.reason)
            self._latest = change
            self._wake.set()

    async def run(self) -> None:
        """Apply the latest decision; account steered bytes. Never returns."""
        while True:
            timeout = self._account_interval_s if self._steered_applied() else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if self._latest is not None and self._latest is not self.applied:
                    await self._apply(self._latest)
                await self._account()
            except Exception as exc:
                self.report(exc)
                await asyncio.sleep(self._retry_s)
                self._wake.set()

    def describe(self) -> dict[str, Any]:
        return {**self.policy.describe(), "applied": self._steered_applied(),
                "destinations": list(self.applied_to), "lte_bytes": self.lte_bytes}

    async def remove(self) -> None:
        """Steering off (the owner's exit): the rules go."""
        await self.routes.unsteer()

    def _steered_applied(self) -> bool:
        return self.applied is not None and self.applied.steered

    async def _apply(self, change: SteerChange) -> None:
        if change.steered:
            destinations = list(await self._destinations())
            await self.routes.steer(destinations)
            self._counter = await self.routes.lte_bytes()
            self.applied_to = destinations
        else:
            await self._account()
            # after a failover the steered connections are on the new path already
            await self.routes.unsteer(close_connections=self._wired_active)
            self._counter = None
        self.applied = change
        if self._on_steer is not None:
            try:
                self._on_steer(change, list(self.applied_to), self.lte_bytes)
            except Exception as exc:
                self.report(exc)
        if not change.steered:
            self.applied_to = []

    async def _account(self) -> None:
        if not self._steered_applied() or self._counter is None:
            return
        now = await self.routes.lte_bytes()
        if now is None:
            return
        spent, self._counter = max(0, now - self._counter), now
        self.lte_bytes += spent
        if self.budget is not None and spent:
            self.budget.account_steered(spent)
