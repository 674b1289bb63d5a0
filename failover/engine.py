"""The failover engine: probes, carrier events, decisions and route control, composed.

``FailoverEngine.run()`` owns every task it starts (one ``asyncio.TaskGroup``; each
probe loop owns its rounds in a group of its own) and bounds every wait with a
timeout scope. Nothing outlives ``run()``: cancel it to stop the engine. Routes,
forwarding and conntrack are injected and stay as they are on exit (the controllers
are restart-safe); closing them is their owner's job.

Tasks
-----
* a probe loop per uplink. A round *starts* every ``round_interval_s`` of that
  uplink's ``MonitorConfig``, **without waiting for the previous round**: each round
  is a task with its own deadline (``probe_timeout_s``, enforced by the probes and,
  as a backstop, by a timeout scope ``round_slack_s`` later), so with the defaults
  up to two rounds are in flight and a verdict arrives every 0.5 s even on a dead
  line (what ``failover.decision`` assumes). Rounds are fed to the uplink's
  ``LinkMonitor`` in completion order.
* LTE hot standby: LTE is probed *sparsely* while it is not needed, every
  ``standby_interval_s`` -- by default ``standby_probe_interval_s()`` for the bytes
  one LTE round costs (the documented per-target estimate, or the measured average
  when larger) within ``lte_budget_bytes`` (5 MB/month), stretched by
  ``adaptive_standby_interval_s()`` when the month's standby spending runs ahead.
  LTE is probed at its full rate while it is active, while wired is down (which
  includes booting and carrier loss), while wired is *suspect* (its down test half
  way: half of ``down_after_rounds`` consecutive failed rounds, or 3/4 of the
  sequential test's threshold; a fresh LTE verdict is ready by the time wired is
  declared down), and while LTE awaits a verdict -- at boot, after
  its carrier returned (modem reconnect) or a SIM switch, until it is usable or a
  round fails (at most ``stable_s`` of rounds, ~36 KB with the defaults; those bytes
  count against the budget). A switch to the full rate starts a round at once.
* a carrier watcher (``LinkWatcher``, restarted on failure): carrier loss marks the
  uplink down at once, no rounds needed.
* a route worker that applies the selector's decisions one at a time through
  ``switch_uplink`` (routes make-before-break, then the LAN forwarding, then the
  conntrack flush of the uplink traffic left). Decisions taken while a switch runs
  are coalesced: the worker always applies the latest one. A failed switch is
  reported through ``on_error`` and retried with exponential backoff (a new decision
  cuts the wait short); the engine keeps running. An uplink left while it still
  works is flushed ``flush_grace_s`` later (a dead one at once): until then the LAN
  flows that started on it keep it (sticky uplinks, ``failover.sticky``), after it
  their next packets follow the new route.
* maintenance, every ``maintenance_interval_s``: ``ensure_present`` for every uplink
  that has carrier (healthy, or down and watched for recovery: its bound probes need
  a route out of it, see ``failover.probes``), ``sticky.sync`` (the sticky tables
  copy the uplinks' default routes; also run after every switch), and
  ``conntrack.addresses_of`` for every usable uplink, so that a flush after it died
  still knows the addresses it had (a dead uplink has often lost its DHCP address).
  The pass reads each kernel dump once for all three (``failover.netlink_reads``).

The selector (``UplinkSelector``) is consulted after every round and carrier event.

SIM switch: when LTE fails while it is the active uplink and the selector gives up
(offline mode), an optional ``switch_sim()`` callback is called *before* offline mode
is applied. When it returns True (the modem now uses its other SIM) the LTE link is
judged afresh (a new ``LinkMonitor``, probed at the full rate) for up to
``sim_verdict_timeout_s``; if the selector picks an uplink meanwhile, that is applied
and offline mode never is. Otherwise (False, an exception, a timeout) offline mode is
applied. One attempt per LTE failure: re-armed once LTE has been usable again.

Time: ``monotonic`` drives the decisions; scheduling uses the event loop's time. They
must agree (the default, ``time.monotonic``, is what asyncio's loop uses; tests run a
virtual-time loop and pass its ``time``).

Parts: the settings are one ``EngineConfig``; the LTE standby accounting is
``failover.budget.LteBudget``, route control ``failover.route_applier.RouteApplier``
(the route worker and the routes' upkeep), the SIM switch
``failover.sim_fallback.SimFallback``, the optional steering of the gateway's traffic
around a brownout ``failover.steering.Steering`` (fed every wired round, asked at every
decision). The engine owns the tasks and wires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from failover import link, netlink_reads
from failover.budget import LTE_BUDGET_BYTES, LteBudget
from failover.config import MonitorConfig, SelectorConfig, check_positive
from failover.decision import LinkMonitor
from failover.errors import ProbeConfigError, RouteConfigError
from failover.link import LinkChange, LinkStatus, Monotonic, RoundOutcome, Transition
from failover.linkwatch import LinkWatcher
from failover.probes.accounting import ByteCounter
from failover.probes.keep import ProbeConnections
from failover.probes.options import ProbeOptions
from failover.probes.round import probe_round
from failover.quiet import QuietPace
from failover.route_applier import RouteApplier, RouteTiming, StickySync
from failover.routes import (
    ConnectionFlusher,
    Forwarding,
    RouteController,
    SwitchReport,
    Uplink,
    UplinkName,
    uplink_map,
)
from failover.selector import UplinkSelector
from failover.sim_fallback import SimFallback, SimSteps, SwitchSim
from failover.steering import Steering
from failover.targets import ProbeTarget, parse_target

__all__ = [
    "CarrierSource",
    "EngineConfig",
    "FailoverEngine",
    "LinkWatcherFactory",
    "ProbeRound",
    "RoundFn",
]

log = logging.getLogger(__name__)


class ProbeRound(RoundOutcome, Protocol):
    """What a round function returns (``probes.RoundResult`` fits)."""

    @property
    def bytes_sent(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...


class RoundFn(Protocol):
    """``probes.probe_round``'s signature; tests pass a fake."""

    def __call__(
        self,
        targets: Sequence[ProbeTarget],
        interface: str,
        timeout_s: float,
        quorum: int,
        *,
        options: ProbeOptions | None = ...,
        counter: ByteCounter | None = ...,
    ) -> Awaitable[ProbeRound]: ...


CarrierSource = AbstractAsyncContextManager[AsyncIterator[tuple[str, bool]]]
LinkWatcherFactory = Callable[[Sequence[str]], CarrierSource]
Targets = Sequence[ProbeTarget | str] | Mapping[UplinkName, Sequence[ProbeTarget | str]]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's settings (module docs); seconds unless the name says otherwise.

    ``monitor`` and ``probe_options`` are one for all uplinks or one per uplink name
    (a name left out gets the defaults). ``netns``: where the carrier watcher looks.
    ``standby_interval_s``: fixed LTE standby spacing; None derives it from the budget.
    """

    monitor: MonitorConfig | Mapping[UplinkName, MonitorConfig] | None = None
    selector: SelectorConfig | None = None
    probe_options: ProbeOptions | Mapping[UplinkName, ProbeOptions] | None = None
    netns: str | None = None
    watch_carrier: bool = True
    lte_budget_bytes: float = LTE_BUDGET_BYTES
    standby_interval_s: float | None = None
    maintenance_interval_s: float = 10.0
    round_slack_s: float = 0.5
    switch_timeout_s: float = 30.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    flush_grace_s: float = 5.0
    sim_switch_timeout_s: float = 60.0
    sim_verdict_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        check_positive("lte_budget_bytes", self.lte_budget_bytes)
        if self.standby_interval_s is not None:
            check_positive("standby_interval_s", self.standby_interval_s)
        for field in ("maintenance_interval_s", "round_slack_s", "switch_timeout_s",
                      "retry_initial_s", "retry_max_s", "sim_switch_timeout_s",
                      "sim_verdict_timeout_s"):
            check_positive(field, getattr(self, field))

    @property
    def backoff_max_s(self) -> float:
        """The longest retry wait (never shorter than the first)."""
        return float(max(self.retry_initial_s, self.retry_max_s))

    @property
    def route_timing(self) -> RouteTiming:
        return RouteTiming(float(self.switch_timeout_s), float(self.retry_initial_s),
                           self.backoff_max_s, self.flush_grace_s)

    def monitor_for(self, name: UplinkName) -> MonitorConfig:
        monitor = self.monitor
        if isinstance(monitor, Mapping):
            return monitor.get(name, MonitorConfig())
        return monitor or MonitorConfig()

    def options_for(self, name: UplinkName) -> ProbeOptions | None:
        options = self.probe_options
        return options.get(name) if isinstance(options, Mapping) else options


@dataclass(frozen=True, slots=True)
class _FailedRound:
    """A round that did not finish within its scope: nothing answered."""

    attempted: int
    quorum: int
    ok: bool = False
    succeeded: int = 0
    median_latency_ms: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True, slots=True)
class _LastRound:
    started: float
    finished: float
    ok: bool
    succeeded: int
    attempted: int
    median_latency_ms: float | None
    standby: bool

    def describe(self, now: float) -> dict[str, Any]:
        return {"ok": self.ok, "succeeded": self.succeeded, "attempted": self.attempted,
                "median_latency_ms": self.median_latency_ms, "standby": self.standby,
                "age_s": round(now - self.finished, 3)}


def _checked_uplinks(uplinks: Sequence[Uplink], routes: RouteController,
                     ) -> dict[UplinkName, Uplink]:
    by_name: dict[UplinkName, Uplink] = uplink_map(uplinks)
    if "wired" not in by_name:
        raise RouteConfigError("uplinks", sorted(by_name), "a wired uplink is needed")
    missing = set(by_name) - set(routes.uplinks)
    if missing:
        raise RouteConfigError("uplinks", sorted(missing),
                               "not managed by the route controller")
    for name, uplink in by_name.items():
        if routes.uplinks[name].interface != uplink.interface:
            raise RouteConfigError(f"{name}.interface", uplink.interface,
                                   "differs from the route controller's")
    return by_name


def _keeping(options: ProbeOptions | None, connections: ProbeConnections) -> ProbeOptions:
    """``options`` whose HTTP(S) probes keep their connections between rounds in the
    engine's (probes.keep, #13: closed when ``run`` ends, an uplink's on carrier loss)."""
    options = options if options is not None else ProbeOptions()
    return options if options.connections is not None else replace(
        options, connections=connections)


def _targets_for(name: UplinkName, targets: Targets,
                 config: MonitorConfig) -> tuple[ProbeTarget, ...]:
    chosen = targets.get(name) if isinstance(targets, Mapping) else targets
    if not chosen:
        raise ProbeConfigError(f"{name}.targets", chosen, "at least one target is needed")
    parsed = tuple(t if isinstance(t, ProbeTarget) else parse_target(t) for t in chosen)
    if config.quorum > len(parsed):
        raise ProbeConfigError(f"{name}.quorum", config.quorum,
                               f"exceeds the {len(parsed)} probe targets")
    return parsed


class FailoverEngine:
    """Watches the uplinks end to end and keeps traffic on the best one. See module docs.

    ``config`` holds the settings; the keywords are the collaborators: route control's
    helpers (``forwarding``, ``conntrack``, ``sticky``), the probes (``round_fn``,
    ``counter``), the carrier watcher, the modem's ``switch_sim``, the time source and
    the owner's callbacks.
    """

    def __init__(
        self,
        uplinks: Sequence[Uplink],
        targets: Targets,
        routes: RouteController,
        config: EngineConfig | None = None,
        *,
        forwarding: Forwarding | None = None,
        conntrack: ConnectionFlusher | None = None,
        sticky: StickySync | None = None,
        counter: ByteCounter | None = None,
        round_fn: RoundFn = probe_round,
        link_watcher: LinkWatcherFactory | None = None,
        switch_sim: SwitchSim | None = None,
        steering: Steering | None = None,
        monotonic: Monotonic = time.monotonic,
        on_link: Callable[[UplinkName, LinkStatus], None] | None = None,
        on_transition: Callable[[Transition, SwitchReport], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_round: Callable[[UplinkName, ProbeRound], None] | None = None,
    ) -> None:
        self._config = cfg = config if config is not None else EngineConfig()
        self._uplinks = _checked_uplinks(uplinks, routes)
        names = list(self._uplinks)
        self._configs = {n: cfg.monitor_for(n) for n in names}
        self._targets = {n: _targets_for(n, targets, self._configs[n]) for n in names}
        self._connections = ProbeConnections(monotonic=monotonic)
        self._options = {n: _keeping(cfg.options_for(n), self._connections) for n in names}
        self._counter, self._monotonic = counter, monotonic
        self._round_fn, self._link_watcher = round_fn, link_watcher
        self._on_link, self._on_error, self._on_round = on_link, on_error, on_round
        self._monitors = {n: LinkMonitor(self._configs[n], monotonic) for n in names}
        # Without an LTE uplink the selector sees one that never comes up.
        self._no_lte = LinkMonitor(MonitorConfig(), monotonic).status()
        self._selector = UplinkSelector(cfg.selector, monotonic)
        self._published: dict[UplinkName, tuple[link.LinkState, bool]] = {
            n: (m.state, m.status().carrier) for n, m in self._monitors.items()}
        self._carrier: dict[UplinkName, bool | None] = dict.fromkeys(names)
        self._wake: dict[UplinkName, asyncio.Event] = {n: asyncio.Event() for n in names}
        self._rounds_started: dict[UplinkName, int] = dict.fromkeys(names, 0)
        self._in_flight: dict[UplinkName, int] = dict.fromkeys(names, 0)
        self._last_round: dict[UplinkName, _LastRound | None] = dict.fromkeys(names)
        self._pace = {n: QuietPace.of(c, self._wake[n].set) for n, c in self._configs.items()}
        self._lte_full_rate = True
        self._lte_verdict_pending = True  # boot: until LTE is usable or a round fails
        self._budget = LteBudget(
            self._targets.get("lte") or self._targets["wired"], cfg.lte_budget_bytes,
            fixed_interval_s=cfg.standby_interval_s, monotonic=monotonic)
        self._applier = RouteApplier(
            routes, self._selector, cfg.route_timing, forwarding=forwarding,
            conntrack=conntrack, sticky=sticky, report=self._report,
            on_transition=on_transition)
        self._decision_event = asyncio.Event()
        self._sim = self._sim_fallback(switch_sim)
        # steered bytes count against the LTE budget
        self._steering = steering and steering.attach(self._budget, self._report)
        self._errors = 0
        self._last_error: str | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._running = False

    def _sim_fallback(self, switch_sim: SwitchSim | None) -> SimFallback:
        steps = SimSteps(self._rejudge_lte, self._ensure_lte_route, self._until_chosen,
                         self._sim_over)
        return SimFallback(switch_sim, steps, switch_timeout_s=self._config.sim_switch_timeout_s,
                           verdict_timeout_s=self._config.sim_verdict_timeout_s,
                           report=self._report)

    # ------------------------------------------------------------------ public view

    @property
    def active(self) -> link.Uplink:
        """The selector's decision: ``wired``, ``lte`` or ``none`` (offline mode)."""
        return self._selector.active

    @property
    def applied(self) -> link.Uplink | None:
        """What route control last applied (None: nothing yet)."""
        return self._applier.applied

    @property
    def standby_bytes(self) -> int:
        """LTE probe bytes spent while LTE was not the active uplink (hot standby)."""
        return self._budget.standby_bytes

    @property
    def standby_interval_s(self) -> float:
        """Seconds between LTE rounds while LTE is in hot standby."""
        return self._budget.interval_s()

    @property
    def lte_round_bytes(self) -> float:
        """Bytes one LTE round costs: the estimate, or the measured average when larger."""
        return self._budget.round_bytes

    def links(self) -> dict[UplinkName, LinkStatus]:
        return {name: m.status() for name, m in self._monitors.items()}

    def describe(self) -> dict[str, Any]:
        """JSON-ready state for ``storebox status``."""
        now = self._monotonic()
        routes = self._applier
        history = self._selector.history[-10:]
        return {
            "active": self._selector.active.value,
            "applied": None if routes.applied is None else routes.applied.value,
            "active_since_s": round(now - self._selector.since, 3),
            "switch_pending": routes.pending,
            "switches": routes.switches,
            "switch_failures": routes.switch_failures,
            "backend": routes.routes.backend,
            "links": {name: self._describe_link(name, now) for name in self._monitors},
            "lte_standby": None if "lte" not in self._uplinks else {
                "full_rate": self._lte_full_rate,
                "verdict_pending": self._lte_verdict_pending,
                **self._budget.describe(),
            },
            "sim": self._sim.describe(),
            "steer": None if self._steering is None else self._steering.describe(),
            "transitions": [{"kind": t.kind.value, "from": t.from_uplink.value,
                             "to": t.to_uplink.value, "reason": t.reason,
                             "age_s": round(now - t.at, 3)} for t in history],
            "route_problems": [p.as_dict() for p in routes.problems],
            "errors": self._errors,
            "last_error": self._last_error,
        }

    def _describe_link(self, name: UplinkName, now: float) -> dict[str, Any]:
        st = self._monitors[name].status()
        last = self._last_round[name]
        role = st.state.value
        if name == "lte":
            role = self._selector.lte_role(st)
        elif self._selector.active is link.Uplink.WIRED and st.usable:
            role = "active"
        return {
            "interface": self._uplinks[name].interface,
            "state": st.state.value,
            "role": role,
            "reason": st.reason,
            "carrier": st.carrier,
            "since_s": round(now - st.since, 3),
            "stable_for_s": round(st.stable_for(now), 3),
            "consecutive_failures": st.consecutive_failures,
            "detector": self._configs[name].detector,
            "evidence": round(st.evidence, 2),
            "loss": st.loss,
            "median_latency_ms": st.median_latency_ms,
            "probe_interval_s": self._interval(name),
            "pace": self._pace[name].describe(),
            "rounds_started": self._rounds_started[name],
            "rounds_in_flight": self._in_flight[name],
            "targets": [t.text for t in self._targets[name]],
            "last_round": None if last is None else last.describe(now),
        }

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Run until cancelled. Every task started here is owned by this call."""
        if self._running:
            raise RuntimeError("FailoverEngine.run() is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._decide()  # the initial LTE rate, and nothing else
                for name in self._uplinks:
                    tg.create_task(self._probe_loop(name), name=f"failover-probes-{name}")
                if self._config.watch_carrier:
                    tg.create_task(self._carrier_loop(), name="failover-carrier")
                tg.create_task(self._applier.run(tg, usable=self._usable,
                                                 defer_offline=self._defer_offline),
                               name="failover-routes")
                tg.create_task(self._maintenance_loop(), name="failover-maintenance")
                if self._steering is not None:
                    tg.create_task(self._steering.run(), name="failover-steer")
        finally:
            self._tg = None
            self._running = False
            await self._connections.close()

    # ------------------------------------------------------------------ probing

    def _interval(self, name: UplinkName) -> float:
        if name == "lte" and not self._lte_full_rate:
            return self.standby_interval_s
        return self._pace[name].interval(self._configs[name].round_interval_s)

    def _wants_full_rate_lte(self) -> bool:
        if "lte" not in self._monitors:
            return False
        if self._selector.active is link.Uplink.LTE:
            return True
        if self._sim.running:
            return True
        if self._lte_verdict_pending:
            return True  # boot, carrier back, a new SIM: get a verdict quickly
        wired = self._monitors["wired"].status()
        return not wired.usable or wired.suspect

    async def _probe_loop(self, name: UplinkName) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake[name]
        last_start: float | None = None
        async with asyncio.TaskGroup() as rounds:
            while True:
                wake.clear()
                interval = self._interval(name)
                now = loop.time()
                due = now if last_start is None else last_start + interval
                if due - now > 1e-3:
                    # A timeout scope until the next round; a rate change wakes us early.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(due):
                            await wake.wait()
                    continue
                # Keep the cadence; after a stall (or a rate change) start afresh.
                last_start = due if last_start is not None and now - due < interval else now
                standby = name == "lte" and not self._lte_full_rate
                self._rounds_started[name] += 1
                rounds.create_task(self._round(name, standby),
                                   name=f"failover-round-{name}-{self._rounds_started[name]}")

    async def _round(self, name: UplinkName, standby: bool) -> None:
        cfg = self._configs[name]
        targets = self._targets[name]
        lte_idle = name == "lte" and self._selector.active is not link.Uplink.LTE
        started = self._monotonic()
        self._in_flight[name] += 1
        late = self._pace[name].watch()  # failover.quiet
        try:
            try:
                async with asyncio.timeout(cfg.probe_timeout_s + self._config.round_slack_s):
                    outcome: ProbeRound = await self._round_fn(
                        targets, self._uplinks[name].interface, cfg.probe_timeout_s,
                        cfg.quorum, options=self._options[name], counter=self._counter)
            except TimeoutError:
                outcome = _FailedRound(attempted=len(targets), quorum=cfg.quorum)
        except Exception as exc:
            # probe_round never raises for network failures: this is a bug or bad
            # configuration. Report it; do not count it as an outage.
            self._report(exc)
            return
        finally:
            self._in_flight[name] -= 1
            if late is not None:
                late.cancel()
        if name == "lte":
            self._budget.account(outcome.bytes_sent + outcome.bytes_received, outcome.ok,
                                 idle=lte_idle, standby=standby)
        self._last_round[name] = _LastRound(
            started, self._monotonic(), outcome.ok, outcome.succeeded, outcome.attempted,
            outcome.median_latency_ms, standby)
        change = self._monitors[name].observe_round(outcome)
        self._pace[name].round_done(outcome, self._monitors[name].status(),
                                    self._monotonic() - started)
        if name == "wired" and self._steering is not None:
            self._steering.add_round(outcome)
        if name == "lte" and not outcome.ok:
            self._lte_verdict_pending = False
        self._publish(name, change)
        self._decide()
        if self._on_round is not None:
            try:
                self._on_round(name, outcome)
            except Exception as exc:
                self._report(exc)

    # ------------------------------------------------------------------ carrier

    def _watcher(self, interfaces: Sequence[str]) -> CarrierSource:
        if self._link_watcher is not None:
            return self._link_watcher(interfaces)
        return LinkWatcher(interfaces, netns=self._config.netns)

    async def _carrier_loop(self) -> None:
        by_interface = {u.interface: name for name, u in self._uplinks.items()}
        delay = self._config.retry_initial_s
        while True:
            try:
                async with self._watcher(sorted(by_interface)) as events:
                    delay = self._config.retry_initial_s
                    async for ifname, up in events:
                        name = by_interface.get(ifname)
                        if name is not None:
                            self.carrier(name, up)
                raise RuntimeError("the carrier watcher stopped")
            except Exception as exc:
                self._report(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._config.backoff_max_s)

    def carrier(self, name: UplinkName, up: bool) -> None:
        """Feed a carrier event (the watcher does; usable by an owner with its own)."""
        if name == "lte" and up and self._carrier[name] is False:
            self._lte_verdict_pending = not self._monitors[name].status().usable
        self._carrier[name] = up
        if not up:
            self._connections.drop(self._uplinks[name].interface)
        change = self._monitors[name].carrier(up)
        self._publish(name, change)
        self._decide()

    # ------------------------------------------------------------------ decisions

    def _status(self, name: UplinkName) -> LinkStatus:
        monitor = self._monitors.get(name)
        return self._no_lte if monitor is None else monitor.status()

    def _publish(self, name: UplinkName, change: LinkChange | None) -> None:
        status = self._monitors[name].status()
        key = (status.state, status.carrier)
        if change is None and key == self._published[name]:
            return
        self._published[name] = key
        if change is not None:
            log.info("failover: %s %s -> %s (%s)", name, change.old, change.new, change.reason)
        if name == "lte" and status.usable:
            self._sim.rearm()
            self._lte_verdict_pending = False
        if self._on_link is not None:
            try:
                self._on_link(name, status)
            except Exception as exc:
                self._report(exc)

    def _decide(self) -> None:
        transition = self._selector.update(self._status("wired"), self._status("lte"))
        if transition is not None:
            log.warning("failover: %s %s -> %s: %s", transition.kind, transition.from_uplink,
                        transition.to_uplink, transition.reason)
            self._applier.decided(transition)
            self._decision_event.set()
        if self._steering is not None:  # the gateway's traffic around a brownout
            self._steering.evaluate(self._status("wired"), self._status("lte"),
                                    self._selector.active)
        full = self._wants_full_rate_lte()
        if full != self._lte_full_rate:
            self._lte_full_rate = full
            if "lte" in self._wake:
                self._wake["lte"].set()

    # ------------------------------------------------------------------ route control

    def _usable(self, name: UplinkName) -> bool:
        return name in self._monitors and self._monitors[name].status().usable

    def _defer_offline(self) -> bool:
        """Before offline mode after LTE failed while active: try the other SIM."""
        if self._sim.running:
            return True  # an attempt runs; it wakes the worker when it concludes
        if (not self._sim.ready or self._applier.applied is not link.Uplink.LTE
                or "lte" not in self._monitors
                or self._monitors["lte"].status().usable or self._tg is None):
            return False
        self._sim.start(self._tg)
        self._decide()  # LTE at full rate while the attempt runs
        return True

    def _rejudge_lte(self) -> None:
        """After a SIM switch: a new monitor for LTE, probed at the full rate."""
        monitor = LinkMonitor(self._configs["lte"], self._monotonic)
        if self._carrier["lte"] is False:
            monitor.carrier(False)
        self._monitors["lte"] = monitor
        self._lte_verdict_pending = True
        self._publish("lte", None)
        self._decide()
        self._wake["lte"].set()

    async def _ensure_lte_route(self) -> None:
        await self._applier.ensure_present(["lte"], None)

    async def _until_chosen(self) -> None:
        while self._selector.active is link.Uplink.NONE:
            self._decision_event.clear()
            await self._decision_event.wait()

    def _sim_over(self) -> None:
        self._applier.wake.set()
        # The attempt is over: LTE drops back to its normal rate.
        asyncio.get_running_loop().call_soon(self._decide)

    # ------------------------------------------------------------------ maintenance

    async def _maintenance_loop(self) -> None:
        while True:
            await self._maintain()
            await asyncio.sleep(self._config.maintenance_interval_s)

    async def _maintain(self) -> None:
        # One read of the kernel's routes, rules, links and addresses for the whole pass
        # (its readers have their own sockets; writes in it read again): #13's idle CPU.
        with netlink_reads.shared_reads():
            watched = [n for n, m in self._monitors.items() if m.status().carrier]
            if watched:
                await self._applier.ensure_present(watched, self._config.switch_timeout_s)
            await self._applier.sync_sticky()
            await self._applier.remember_addresses(
                [n for n, m in self._monitors.items() if m.status().usable])

    # ------------------------------------------------------------------ errors

    def _report(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        log.error("failover: %s", self._last_error, exc_info=exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("failover: on_error callback failed")
