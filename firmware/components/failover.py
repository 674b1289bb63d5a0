"""Composes the failover engine: probes, decisions and route control for the box.

The engine (`failover.engine`) knows nothing of the box. This module builds it from
the config, makes `BoxState.uplink` follow it, turns its transitions into the
contract's events (failover, failback, offline_mode; steer and unsteer around a
brownout: `firmware.components.steer`), and tells the payments side
whether any uplink can reach the gateway (`UplinkSignal`): online-first skips a doomed
attempt in offline mode, and the forwarder drains as soon as a link returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from failover.config import MonitorConfig, SelectorConfig
from failover.conntrack import ConntrackFlusher
from failover.engine import EngineConfig, FailoverEngine
from failover.errors import NftError
from failover.link import LinkStatus, Transition
from failover.nft import LanForwarding
from failover.probes.options import ProbeOptions
from failover.routes import (
    MetricScheme,
    ObserveOnlyRoutes,
    RouteController,
    SwitchReport,
    Uplink,
    UplinkName,
)
from failover.sequential import SEQUENTIAL_RETRY_AFTER_S, sequential_monitor
from failover.steer import SteerChange
from failover.sticky import StickyRoutes
from failover.targets import parse_targets
from firmware.components.context import BoxContext, remove_then_close
from firmware.components.steer import build_steering
from firmware.config import Config
from firmware.state import BoxState, LinkHealth
from firmware.uplink_dns import UplinkResolvers
from payments_cache.uplinks import UplinkSignal

log = logging.getLogger("storebox.failover")

_EVENTS = {"failover": "warning", "failback": "info", "offline_mode": "error",
           "recovered": "info"}


def route_controller(config: Config, uplinks: list[Uplink]) -> RouteController:
    metrics = MetricScheme(wired=config.routing.wired_metric, lte=config.routing.lte_metric)
    backend = config.routing.backend
    if backend == "netlink":
        from failover.routes_netlink import NetlinkRoutes

        return NetlinkRoutes(uplinks, metrics)
    if backend == "networkmanager":
        from failover.routes_nm import NetworkManagerRoutes

        return NetworkManagerRoutes(uplinks, metrics)
    return ObserveOnlyRoutes(uplinks, metrics)


def _wall(monotonic: float) -> datetime:
    """The engine keeps monotonic times; the status shows wall-clock ones."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic)


class FailoverComponent:
    """Runs the engine; its callbacks write the box state (one model, many views)."""

    name = "failover"

    def __init__(self, state: BoxState, signal: UplinkSignal, build: Any,
                 forwarding: LanForwarding | None = None,
                 on_switch: Callable[[str], None] | None = None,
                 resolvers: UplinkResolvers | None = None) -> None:
        self.state = state
        self.signal = signal
        self._build = build
        self.forwarding = forwarding
        #: Each uplink's resolvers, which its probes read; learnt again while it runs.
        self.resolvers = resolvers
        #: Told the uplink ("wired", "lte", "none") after every transition (the LAN's DNS).
        self._on_switch = on_switch
        self.engine: FailoverEngine | None = None
        # engine times are monotonic; the status shows wall-clock times

    async def run(self) -> None:
        self.engine = self._build(self)
        watchers = []
        if self.forwarding is not None:
            # the LTE gateway is blocked for the LAN as it changes (failover.nft)
            watchers.append(asyncio.create_task(self.forwarding.watch_modem_gateway(),
                                                name="failover-modem-gateway"))
        if self.resolvers is not None and self.resolvers.polls:
            # a DHCP renewal's new resolvers reach the probes (firmware.uplink_dns)
            watchers.append(asyncio.create_task(self.resolvers.follow(),
                                                name="failover-resolvers"))
        try:
            await self.engine.run()
        finally:
            self.engine = None
            for watcher in watchers:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    def on_link(self, name: UplinkName, status: LinkStatus) -> None:
        health: LinkHealth = getattr(self.state.uplink, name)
        shown = status.state.value
        if name == "lte" and self.engine is not None and status.usable \
                and self.state.uplink.active != "lte":
            shown = "standby"
        self.state.update(
            health, state=shown, carrier=status.carrier, reason=status.reason or None,
            since=_wall(status.since),
            latency_ms=(None if status.median_latency_ms is None
                        else round(status.median_latency_ms, 2)),
            loss_pct=None if status.loss is None else round(status.loss * 100, 1))

    def on_transition(self, transition: Transition, report: SwitchReport) -> None:
        kind = transition.kind.value
        to = transition.to_uplink.value
        uplink = self.state.uplink
        event = kind if kind != "recovered" else "failback"
        # back on wired, from LTE or from offline mode (not the first decision at start)
        back = event == "failback" and to == "wired" and uplink.since is not None
        self.state.update(
            uplink, active=to, since=_wall(transition.at),
            failovers_total=uplink.failovers_total + (kind == "failover"),
            failbacks_total=uplink.failbacks_total + back)
        if to == "lte" and uplink.lte.state == "standby":
            self.state.update(uplink.lte, state="up")
        if to == "wired" and uplink.lte.state == "up":
            self.state.update(uplink.lte, state="standby")
        self.signal.set("down" if to == "none" else "up")
        if self._on_switch is not None:
            self._on_switch(to)
        if to != "none":
            self.signal.switched()  # online attempts and the forwarder try the new path now
        self.state.events.emit(
            event, f"{transition.from_uplink.value} -> {to}: {transition.reason}",
            severity=_EVENTS.get(kind, "info"),  # type: ignore[arg-type]
            from_uplink=transition.from_uplink.value, to_uplink=to, reason=transition.reason,
            flushed=report.flushed)

    def on_steer(self, change: SteerChange, destinations: list[str], lte_bytes: int) -> None:
        """The gateway's traffic moved to LTE around a brownout, or back to wired."""
        steer = self.state.uplink.steer
        self.state.update(steer, steered=change.steered, since=_wall(change.at),
                          reason=change.reason, destinations=list(destinations),
                          steers_total=steer.steers_total + change.steered,
                          lte_bytes=lte_bytes)
        self.signal.switched()  # the payments' path changed: earlier failures are stale
        kind = "steer" if change.steered else "unsteer"
        where = ", ".join(destinations) or "the gateway"
        self.state.events.emit(
            kind, f"{where} {'by LTE' if change.steered else 'back on wired'}: {change.reason}",
            severity="warning" if change.steered else "info", reason=change.reason,
            destinations=list(destinations), lte_bytes=lte_bytes)

    def on_error(self, exc: BaseException) -> None:
        log.error("route control: %s", exc)
        self.state.events.emit("fault", f"route control: {exc}", severity="error",
                               reason="route_control")


def api_ports(config: Config) -> list[int]:
    """The TCP ports the POS API listens on (`api.listen`, HOST:PORT)."""
    listen = config.api.listen
    values = listen if isinstance(listen, list) else [listen]
    return [int(str(v).rpartition(":")[2]) for v in values]


async def _forwarding(context: BoxContext, uplinks: list[Uplink]) -> LanForwarding | None:
    """The LAN's forwarding, its table already guarding the box (`LanForwarding.guard`):
    built before the API listens, so the API is never open to the uplinks, not even
    before the engine's first decision (which never comes while no uplink works)."""
    routing = context.config.routing
    if not routing.lan_interfaces:
        return None
    # the table also holds the box's own firewall: the API only from the LAN (3a)
    forwarding = LanForwarding(lan_interfaces=routing.lan_interfaces, uplinks=uplinks,
                               lte_allowlist=routing.lte_allowlist or None,
                               api_ports=api_ports(context.config),
                               modem_management=routing.modem_management,
                               lan_services=context.config.lan.enabled)
    context.closers.append(forwarding.close)  # its netlink socket (the LTE gateway's)
    try:
        await forwarding.guard()
    except NftError as exc:
        # a box that cannot take payments helps nobody: serve, and say so loudly (the
        # engine applies the table again at its first decision)
        log.error("firewall: %s", exc)
        context.state.events.emit("fault", f"firewall not in place: {exc}",
                                  severity="error", reason="firewall")
    return forwarding


def probe_options(config: Config, resolvers: UplinkResolvers
                  ) -> dict[UplinkName, ProbeOptions]:
    """Each uplink's probe options: names in probe targets resolve through that uplink's
    own resolvers (configured `wired.dns`/`lte.dns`, else learnt: `firmware.uplink_dns`,
    read at every resolution; `failover.probes.dns` asks them bound to the uplink), and
    the sequential detector's wired probes retry faster."""
    wired = ProbeOptions(resolvers=resolvers.for_probes("wired"))
    if config.probes.detector == "sequential":
        wired = ProbeOptions(attempts=4, retry_after_s=SEQUENTIAL_RETRY_AFTER_S,
                             resolvers=resolvers.for_probes("wired"))
    return {"wired": wired, "lte": ProbeOptions(resolvers=resolvers.for_probes("lte"))}


async def build_failover(
        context: BoxContext, *,
        resolvers: UplinkResolvers | None = None,
        switch_sim: Callable[[], Awaitable[bool]] | None = None,
        on_switch: Callable[[str], None] | None = None) -> FailoverComponent | None:
    """The failover component; its probes resolve names with `resolvers` (each uplink's
    own, `firmware.uplink_dns`; by default configured or the modem's); `switch_sim` (the
    modem's, with `lte.dual_sim`) is the engine's last resort before offline mode;
    `on_switch` is told every new active uplink (the LAN's DNS follows it)."""
    config = context.config
    if not config.routing.failover:
        log.warning("failover is off (routing.failover = false): uplinks are not watched")
        return None
    uplinks = [Uplink("wired", config.wired.interface), Uplink("lte", config.lte.interface)]
    if resolvers is None:
        resolvers = UplinkResolvers(config, context.state)
    probes = config.probes
    rounds = MonitorConfig(
        round_interval_s=probes.interval_s, probe_timeout_s=probes.timeout_s,
        targets=len(probes.targets), quorum=probes.effective_quorum,
        down_after_rounds=probes.down_after_rounds, stable_s=config.routing.failback_after_s)
    monitor: MonitorConfig | dict[UplinkName, MonitorConfig] = rounds
    if probes.detector == "sequential":
        # wired gets the sequential test; LTE (billed) keeps the rounds
        monitor = {"wired": sequential_monitor(
            targets=len(probes.targets), quorum=probes.effective_quorum,
            stable_s=config.routing.failback_after_s, min_outage_s=probes.min_outage_s,
            quiet_interval_s=probes.quiet_interval_s or None), "lte": rounds}
    selector = SelectorConfig(failback_stable_s=config.routing.failback_after_s)
    routes = route_controller(config, uplinks)
    context.closers.append(routes.close)
    forwarding = await _forwarding(context, uplinks)
    conntrack = ConntrackFlusher() if config.routing.backend != "none" else None
    # LAN flows keep the uplink they started on until flushed (failover.sticky)
    sticky = StickyRoutes(uplinks) \
        if forwarding is not None and config.routing.backend != "none" else None
    if sticky is not None:
        context.closers.append(remove_then_close(sticky.remove, sticky.close,
                                                 what="sticky routes", log=log))
    targets = parse_targets(probes.targets)

    # built once: its policy (the steer interval) outlives an engine restart
    steering = build_steering(context, uplinks[1], lambda *change: component.on_steer(*change))

    def build(component: FailoverComponent) -> FailoverEngine:
        return FailoverEngine(
            uplinks, targets, routes,
            EngineConfig(monitor=monitor, selector=selector,
                         probe_options=probe_options(config, resolvers),
                         lte_budget_bytes=probes.lte_budget_mb_per_month * 1_000_000),
            forwarding=forwarding, conntrack=conntrack, sticky=sticky,
            switch_sim=switch_sim, steering=steering,
            on_link=component.on_link, on_transition=component.on_transition,
            on_error=component.on_error)

    for health in (context.state.uplink.wired, context.state.uplink.lte):
        context.state.update(health, state="unknown")
    component = FailoverComponent(context.state, context.uplinks, build, forwarding, on_switch,
                                  resolvers)
    return component
