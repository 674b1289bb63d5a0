"""Route control: which uplink carries traffic, and how traffic is moved between them.

The failover engine decides which uplink is active; a `RouteController` makes the
kernel agree. Two backends implement it:

- `failover.routes_netlink.NetlinkRoutes` -- kernel default routes via netlink (pyroute2);
- `failover.routes_nm.NetworkManagerRoutes` -- NetworkManager over D-Bus (`Reapply`).

Metric scheme
-------------
Every uplink with a usable link keeps a default route (docs/config.md: probes bound to an
interface need a route out of it). Only the metric differs:

- the *active* uplink: `MetricScheme.active` (default 50);
- a *standby* uplink: its own base metric (`wired` 100, `lte` 600 by default, from
  `routing.wired_metric` / `routing.lte_metric`);
- while switching, the new uplink briefly holds `active - 1` (the *switching* metric).

The lowest metric wins, so traffic follows the active uplink and falls back to wired
before LTE when nothing is active. The metrics are always pairwise distinct: two IPv4
default routes with one metric collide (EEXIST) and two IPv6 ones would be merged
into one multipath route.

Make-before-break
-----------------
`plan_metric_changes` turns "make B active" into single-uplink metric changes, in an
order in which a default route exists at every instant and traffic moves exactly once:

1. B gets the switching metric (`active - 1`): it now beats the old active uplink A,
   which keeps its route untouched;
2. A drops to its standby metric (A keeps a route: its probes keep working);
3. B moves from `active - 1` to `active` (the canonical value).

Each backend performs one metric change make-before-break as well: netlink adds the
route with the new metric before deleting the old one; NetworkManager's `Reapply`
is only issued while the *other* uplink's route is in place, and the next step waits
until the kernel shows the new metric.

After the routes have moved, flush the connections pinned to the uplink traffic left
(`failover.conntrack`), never before and never all of them; `switch_uplink` does
exactly that order. Until that flush, LAN flows keep the uplink they started on, even
though the default route moved (sticky uplinks: conntrack marks set by `failover.nft`,
policy routes kept by `failover.sticky`, for either backend); otherwise the NAT kills
a flow whose first packets left through the old uplink just before the move.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from failover.errors import RouteConfigError

UplinkName = Literal["wired", "lte"]
UPLINK_NAMES: tuple[UplinkName, ...] = get_args(UplinkName)
Role = Literal["active", "switching", "standby", "absent"]

# Linux: at most IFNAMSIZ-1 = 15 bytes; we also refuse characters that would need
# quoting anywhere (nft rulesets, keyfiles, logs).
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,14}")
MAX_METRIC = 0xFFFFFFFF


def interface_name_problem(value: object) -> str | None:
    """Why `value` is not an acceptable Linux interface name, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value.encode()) > 15:
        return "longer than 15 bytes (Linux IFNAMSIZ)"
    if value in (".", ".."):
        return "is not a valid interface name"
    if not _IFNAME.fullmatch(value):
        return "may only hold letters, digits and _ . + - and must not start with . + -"
    return None


def uplink_name(value: object, field: str = "uplink") -> UplinkName:
    """`value` as an `UplinkName`, or RouteConfigError naming the bad value."""
    for name in UPLINK_NAMES:
        if value == name:
            return name
    raise RouteConfigError(field, value, f"must be one of {', '.join(UPLINK_NAMES)}")


@dataclass(frozen=True)
class Uplink:
    """One uplink: its role name and the kernel interface that carries it."""

    name: UplinkName
    interface: str

    def __post_init__(self) -> None:
        uplink_name(self.name, "uplink.name")
        problem = interface_name_problem(self.interface)
        if problem is not None:
            raise RouteConfigError(f"{self.name}.interface", self.interface, problem)


def uplink_map(uplinks: Iterable[Uplink]) -> dict[UplinkName, Uplink]:
    """Uplinks by name; refuses duplicates (names or interfaces)."""
    result: dict[UplinkName, Uplink] = {}
    interfaces: dict[str, UplinkName] = {}
    for uplink in uplinks:
        if not isinstance(uplink, Uplink):
            raise RouteConfigError("uplinks", uplink, "must be Uplink instances")
        if uplink.name in result:
            raise RouteConfigError("uplinks", uplink.name, "listed twice")
        if uplink.interface in interfaces:
            raise RouteConfigError(
                f"{uplink.name}.interface", uplink.interface,
                f"already used by uplink {interfaces[uplink.interface]!r}")
        result[uplink.name] = uplink
        interfaces[uplink.interface] = uplink.name
    if not result:
        raise RouteConfigError("uplinks", [], "at least one uplink is needed")
    return result


@dataclass(frozen=True)
class MetricScheme:
    """Default-route metrics: `active` for the active uplink, a base metric per uplink
    while it is standby, and `active - 1` for the uplink being switched to."""

    active: int = 50
    wired: int = 100
    lte: int = 600

    def __post_init__(self) -> None:
        for name in ("active", "wired", "lte"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RouteConfigError(f"metrics.{name}", value, "must be an integer")
            if not 0 <= value <= MAX_METRIC:
                raise RouteConfigError(f"metrics.{name}", value,
                                       f"must be between 0 and {MAX_METRIC}")
        if self.active < 1:
            raise RouteConfigError("metrics.active", self.active,
                                   "must be at least 1 (active - 1 is the switching metric)")
        for name in ("wired", "lte"):
            if getattr(self, name) <= self.active:
                raise RouteConfigError(
                    f"metrics.{name}", getattr(self, name),
                    f"a standby metric must be greater than the active metric {self.active}")
        if self.wired == self.lte:
            raise RouteConfigError("metrics.lte", self.lte,
                                   "must differ from the wired standby metric")

    @property
    def switching(self) -> int:
        return self.active - 1

    def standby(self, uplink: UplinkName) -> int:
        return self.wired if uplink == "wired" else self.lte

    def role(self, uplink: UplinkName, metric: int | None) -> Role:
        """What an uplink whose best default route has `metric` is doing."""
        if metric is None:
            return "absent"
        if metric == self.active:
            return "active"
        if metric == self.switching:
            return "switching"
        return "standby"

    def as_dict(self) -> dict[str, Any]:
        return {"active": self.active, "switching": self.switching,
                "standby": {"wired": self.wired, "lte": self.lte}}


@dataclass(frozen=True)
class MetricChange:
    """Give `uplink`'s default route(s) `metric` (make-before-break)."""

    uplink: UplinkName
    metric: int


def plan_metric_changes(current: Mapping[UplinkName, int | None], target: UplinkName | None,
                        scheme: MetricScheme) -> list[MetricChange]:
    """The ordered metric changes that make `target` active (None: nothing active).

    `current` holds each managed uplink's best (lowest) default-route metric now, None
    when it has no default route. Uplinks without a route are never given one here
    (only `target` is): that is `ensure_present`'s job. The order guarantees that a
    default route exists at every step and that traffic moves exactly once.
    """
    steps: list[MetricChange] = []

    def normalise_others(skip: UplinkName | None) -> list[MetricChange]:
        return [MetricChange(name, scheme.standby(name))
                for name, metric in current.items()
                if name != skip and metric is not None and metric != scheme.standby(name)]

    if target is None:
        # Every change keeps the uplink's own route (and the others'): no gap.
        return normalise_others(None)
    if target not in current:
        raise RouteConfigError("uplink", target, "is not managed by this controller")
    rivals = [name for name, metric in current.items()
              if name != target and metric is not None and metric <= scheme.active]
    if rivals:
        # Another uplink holds (or beats) the active metric: raise the target above it
        # first, then demote the rivals, then settle the target on the active metric.
        if current[target] != scheme.switching:
            steps.append(MetricChange(target, scheme.switching))
        steps.extend(normalise_others(target))
        steps.append(MetricChange(target, scheme.active))
        return steps
    if current[target] != scheme.active:
        steps.append(MetricChange(target, scheme.active))
    steps.extend(normalise_others(target))
    return steps


@dataclass(frozen=True)
class RouteProblem:
    """An uplink that `ensure_present` could not give a default route, and why."""

    uplink: UplinkName
    interface: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"uplink": self.uplink, "interface": self.interface, "reason": self.reason}


@runtime_checkable
class RouteController(Protocol):
    """Moves traffic between uplinks. Implementations are idempotent, safe to call
    again after a failure (they work from the kernel's state, not from memory), and
    serialise their own operations."""

    backend: str
    uplinks: Mapping[UplinkName, Uplink]
    metrics: MetricScheme

    async def activate(self, uplink: UplinkName) -> None:
        """Make `uplink` carry traffic (active metric), make-before-break; the previous
        active uplink keeps a route with its standby metric. Raises
        UplinkUnavailableError (nothing changed) when `uplink` cannot carry a route."""
        ...

    async def deactivate_all(self) -> None:
        """Offline mode: no uplink is preferred any more. Every uplink's route drops to
        its standby metric; routes stay so that probes can see an uplink recover
        (the LAN is cut off by `failover.nft`, not here)."""
        ...

    async def ensure_present(self, uplinks: Iterable[UplinkName]) -> list[RouteProblem]:
        """Give every listed uplink a default route (standby metric, or the active
        metric for the active uplink) and repair drift (DHCP re-adding its own route,
        NetworkManager re-activating a profile). Returns the uplinks that could not get
        one, with reasons; never removes routes of unlisted uplinks."""
        ...

    async def describe(self) -> dict[str, Any]:
        """JSON-ready state for `storebox status`: backend, active uplink, metrics and
        per uplink its interface, role and default routes as the kernel has them."""
        ...

    async def close(self) -> None:
        """Release sockets / bus connections. Routes stay as they are."""
        ...


class ObserveOnlyRoutes:
    """`routing.backend = "none"`: records decisions, changes nothing (not root)."""

    backend = "none"

    def __init__(self, uplinks: Iterable[Uplink], metrics: MetricScheme | None = None) -> None:
        self.uplinks: Mapping[UplinkName, Uplink] = uplink_map(uplinks)
        self.metrics = metrics or MetricScheme()
        self.active: UplinkName | None = None

    async def activate(self, uplink: UplinkName) -> None:
        name = uplink_name(uplink)
        if name not in self.uplinks:
            raise RouteConfigError("uplink", uplink, "is not managed by this controller")
        self.active = name

    async def deactivate_all(self) -> None:
        self.active = None

    async def ensure_present(self, uplinks: Iterable[UplinkName]) -> list[RouteProblem]:
        for name in uplinks:
            uplink_name(name)
        return []

    async def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "active": self.active,
                "metrics": self.metrics.as_dict(),
                "uplinks": {n: {"interface": u.interface, "role": "unmanaged"}
                            for n, u in self.uplinks.items()}}

    async def close(self) -> None:
        return None


class Forwarding(Protocol):
    """What `switch_uplink` needs from the LAN forwarding (`failover.nft`)."""

    async def apply(self, active: UplinkName | None, also: Sequence[UplinkName] = ()) -> None: ...


class ConnectionFlusher(Protocol):
    """What `switch_uplink` needs from `failover.conntrack`."""

    async def flush_uplink(self, interface: str) -> Any: ...


@dataclass
class SwitchReport:
    """What `switch_uplink` did, in order."""

    active: UplinkName | None
    flushed: dict[str, Any] = field(default_factory=dict)


async def switch_uplink(target: UplinkName | None, *, routes: RouteController,
                        forwarding: Forwarding | None = None,
                        conntrack: ConnectionFlusher | None = None,
                        left: Sequence[UplinkName] = (),
                        flush: Sequence[UplinkName] | None = None) -> SwitchReport:
    """Move traffic to `target` (None: offline) in the only safe order: routes first
    (make-before-break), then the LAN forwarding/NAT, then flush the connection-tracking
    entries pinned to the uplinks traffic `left` (masqueraded via, or sourced from, their
    addresses) -- never before the routes moved, never all entries. Flushing the uplink
    that was left even when it is healthy is deliberate: otherwise existing flows stay
    pinned to it (to the metered LTE after a failback) until they time out.

    `flush` (default: `left`) narrows which of them are flushed now; the engine flushes
    a healthy uplink that was left a little later, so requests in flight on it finish."""
    bridge = tuple(n for n in left if n != target and n in routes.uplinks)
    if forwarding is not None and target is not None and bridge:
        # the LAN may leave by either uplink while the routes move: no refused connections
        await forwarding.apply(target, also=bridge)
    if target is None:
        await routes.deactivate_all()
    else:
        await routes.activate(target)
    if forwarding is not None:
        await forwarding.apply(target)
    report = SwitchReport(active=target)
    if conntrack is not None:
        for name in (left if flush is None else flush):
            if name == target or name not in routes.uplinks:
                continue
            report.flushed[name] = await conntrack.flush_uplink(routes.uplinks[name].interface)
    return report
